"""Which offered models a worker can use: on disk, downloadable, or not at all (offline), asked of
the network only when one is missing, and what the coordinator tells a user who asks for one."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

from engine.config import ModelsConfig, ModelSpec
from engine.models.availability import Availability, ModelState, ask, survey, unavailable
from engine.models.registry import clip_weights, preset_paths
from tests.fleet import free_port


def offered(tmp_path: Path, **kw) -> ModelsConfig:
    return ModelsConfig(cache_dir=str(tmp_path / "cache"), vqgan_choices=("wikiart_16384",),
                        clip_choices=("RN50/openai",), **kw)


def downloaded(cfg: ModelsConfig) -> None:
    """Put the configured models (imagenet_f16_16384 and ViT-B-32/openai) where fetching saves them."""
    ckpt = preset_paths("imagenet_f16_16384", cfg.cache_dir)[1]
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    _, dest = clip_weights("ViT-B-32", "openai", (Path(cfg.cache_dir) / "open_clip",)).downloads[0]
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"weights")


class Probe:
    """Answers every HEAD request with ``answer`` (an HTTP status, or None: nothing answers);
    ``gone`` URLs (those containing one of these words) answer 404."""

    def __init__(self, answer: int | None, gone: tuple[str, ...] = ()) -> None:
        self.answer, self.gone, self.asked = answer, gone, []

    def __call__(self, url: str) -> int | None:
        self.asked.append(url)
        return 404 if any(g in url for g in self.gone) else self.answer


def states(a: Availability) -> dict[str, str]:
    return {m.name: m.state for m in a.models}


def test_without_network_the_models_not_downloaded_are_unreachable(tmp_path):
    cfg = offered(tmp_path)
    downloaded(cfg)
    probe = Probe(answer=None)
    a = survey(cfg, probe)
    assert states(a) == {"imagenet_f16_16384": "on_disk", "wikiart_16384": "unreachable",
                         "ViT-B-32/openai": "on_disk", "RN50/openai": "unreachable"}
    assert a.offline
    # only the missing models' URLs were asked, each once (imagenet's heibox links were not)
    assert probe.asked and not any("heibox" in u for u in probe.asked)
    assert len(set(probe.asked)) == len(probe.asked)


def test_with_network_the_missing_models_are_downloadable(tmp_path):
    cfg = offered(tmp_path)
    downloaded(cfg)
    a = survey(cfg, Probe(answer=200))
    assert states(a)["wikiart_16384"] == "fetchable" and states(a)["RN50/openai"] == "fetchable"
    assert not a.offline
    a = survey(cfg, Probe(answer=405))  # a server that will not answer HEAD may still send the file
    assert states(a)["wikiart_16384"] == "fetchable"


def test_a_model_whose_every_link_is_gone_cannot_be_had_though_the_network_is_there(tmp_path):
    cfg = offered(tmp_path)
    downloaded(cfg)
    wikiart_hosts = ("Eleiber", "eaidata", "mirror.io.community")
    a = survey(cfg, Probe(answer=200, gone=wikiart_hosts))
    assert states(a)["wikiart_16384"] == "unreachable" and states(a)["RN50/openai"] == "fetchable"
    assert not a.offline
    why = unavailable(ModelSpec(vqgan="wikiart_16384"), [a])
    assert why is not None and why.startswith("wikiart_16384 is not downloaded, and no download link has it now")


def test_offline_true_asks_nobody_and_everything_on_disk_asks_nobody(tmp_path):
    probe = Probe(answer=200)
    a = survey(offered(tmp_path, offline=True), probe)
    assert set(states(a).values()) == {"unreachable"} and a.offline and probe.asked == []
    cfg = ModelsConfig(cache_dir=str(tmp_path / "other"))
    downloaded(cfg)
    a = survey(cfg, probe)
    assert set(states(a).values()) == {"on_disk"} and not a.offline and probe.asked == []


def test_ask_gives_the_status_without_following_redirects_or_none_when_nobody_answers(tmp_path):
    class Mirror(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(302 if self.path == "/moved.ckpt" else 404)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere.ckpt")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert ask(f"{base}/wikiart_16384.ckpt", timeout=2) == 404
        assert ask(f"{base}/moved.ckpt", timeout=2) == 302  # the file is somewhere; not fetched to find out
    finally:
        server.shutdown()
        server.server_close()
    assert ask(f"http://127.0.0.1:{free_port()}/x.ckpt", timeout=2) is None  # nobody listens there


def _report(state: str) -> Availability:
    return Availability(models=(
        ModelState(key="preset:imagenet_f16_16384", name="imagenet_f16_16384", kind="vqgan", state="on_disk"),
        ModelState(key="preset:wikiart_16384", name="wikiart_16384", kind="vqgan", state=state),
        ModelState(key="open_clip:ViT-B-32|openai", name="ViT-B-32/openai", kind="clip", state="on_disk"),
    ), offline=state == "unreachable")


def test_a_request_is_refused_only_when_no_worker_can_get_its_models():
    wikiart = ModelSpec(vqgan="wikiart_16384")
    assert unavailable(wikiart, []) is None  # nothing known: not refused
    assert unavailable(wikiart, [_report("unreachable"), _report("on_disk")], fleet=True) is None
    assert unavailable(wikiart, [_report("unreachable"), None], fleet=True) is None  # one not surveyed yet
    assert unavailable(ModelSpec(), [_report("unreachable")]) is None  # the default is on disk
    why = unavailable(wikiart, [_report("unreachable"), _report("unreachable")], fleet=True)
    assert why == ("wikiart_16384 is not downloaded on any worker, and the workers are offline; "
                   "available: model imagenet_f16_16384; clip ViT-B-32/openai")
    assert "this machine is offline" in (unavailable(wikiart, [_report("unreachable")]) or "")
