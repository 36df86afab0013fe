"""Which offered models a worker can use: on disk, downloadable, or not at all (offline), asked of
the network only when one is missing, and what the coordinator tells a user who asks for one."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

from engine.config import ModelsConfig, ModelSpec
from engine.models.availability import Availability, ModelState, reachable, survey, unavailable
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
    def __init__(self, answer: bool) -> None:
        self.answer, self.asked = answer, []

    def __call__(self, url: str) -> bool:
        self.asked.append(url)
        return self.answer


def states(a: Availability) -> dict[str, str]:
    return {m.name: m.state for m in a.models}


def test_without_network_the_models_not_downloaded_are_unreachable(tmp_path):
    cfg = offered(tmp_path)
    downloaded(cfg)
    probe = Probe(answer=False)
    a = survey(cfg, probe)
    assert states(a) == {"imagenet_f16_16384": "on_disk", "wikiart_16384": "unreachable",
                         "ViT-B-32/openai": "on_disk", "RN50/openai": "unreachable"}
    assert a.offline
    # only the missing models' hosts were asked, each host once
    assert probe.asked and not any("heibox" in u for u in probe.asked)
    assert len({u.split("/")[2] for u in probe.asked}) == len(probe.asked)


def test_with_network_the_missing_models_are_downloadable(tmp_path):
    cfg = offered(tmp_path)
    downloaded(cfg)
    a = survey(cfg, Probe(answer=True))
    assert states(a)["wikiart_16384"] == "fetchable" and states(a)["RN50/openai"] == "fetchable"
    assert not a.offline


def test_offline_true_asks_nobody_and_everything_on_disk_asks_nobody(tmp_path):
    probe = Probe(answer=True)
    a = survey(offered(tmp_path, offline=True), probe)
    assert set(states(a).values()) == {"unreachable"} and a.offline and probe.asked == []
    cfg = ModelsConfig(cache_dir=str(tmp_path / "other"))
    downloaded(cfg)
    a = survey(cfg, probe)
    assert set(states(a).values()) == {"on_disk"} and not a.offline and probe.asked == []


def test_reachable_means_a_server_answered_whatever_it_said(tmp_path):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert reachable(f"http://127.0.0.1:{server.server_address[1]}/wikiart_16384.ckpt", timeout=2)
    finally:
        server.shutdown()
        server.server_close()
    assert not reachable(f"http://127.0.0.1:{free_port()}/x.ckpt", timeout=2)  # nobody listens there


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
