"""The Shoal dashboard: a read-only web page with live charts of a run, served from Redis.

    shoal dashboard [--host 127.0.0.1 --port 8420 --token T --runs-dir runs | --redis-url URL]
`shoal train` starts one beside the run (`dashboard.enabled`) and prints its URL.

server.py  HTTP (stdlib ThreadingHTTPServer): static page + JSON API, token, read-only
api.py     the JSON replies, read through services/metrics.py (malformed entries skipped, counted)
follow.py  `shoal metrics RUN --follow`: the same numbers in the terminal
static/    index.html, style.css, charts.js (hand-written SVG charts), app.js; no CDN, no build
Tests: tests/unit/test_dashboard_api.py, -m integration tests/integration/test_dashboard_browser.py.
"""

from shoal.services.dashboard.server import DashboardRefused, DashboardServer, start_dashboard  # noqa: F401
