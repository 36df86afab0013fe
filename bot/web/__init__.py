"""The bot's web server (``[http]``): ``/healthz``, ``/metrics`` and the gallery (``[gallery]``).

``server`` is the aiohttp application on the bot's own event loop, with the limits that keep a slow or
malformed client from holding anything; ``links`` signs and checks the gallery's expiring links;
``gallery`` answers the gallery's pages and files; ``templates/`` and ``static/`` are its package data.
"""
