"""A local stand-in for the Legacy Surveys viewer's cutout.fits, serving a mock tree.

It resamples the brick coadds onto the requested TAN grid with scipy's cubic spline
(independent of lensfinder's Lanczos code) and answers in the service's FITS format.
It can fail the first N requests with 503 and records the peak number of requests in
flight, so the client's retries and concurrency bound can be tested.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fitsio
import numpy as np
from scipy.ndimage import map_coordinates

from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.images import read_header_wcs
from lensfinder.survey.service import service_fits_bytes
from lensfinder.survey.tree import SurveyTree


class CutoutServer:
    def __init__(self, root, fail_first=0, always_fail=False, delay_s=0.0, garbage_first=0, truncate_first=0,
                 retry_after=None, blank=False):
        self.tree = SurveyTree(root)
        self.grid = BrickGrid.build()
        self.fail_first, self.always_fail, self.delay_s = fail_first, always_fail, delay_s
        self.garbage_first = garbage_first  # answer 200 with an HTML error page to the first N
        self.truncate_first = truncate_first  # send half the promised bytes to the first N, then close
        self.retry_after = retry_after  # Retry-After header [s] of the 503 answers
        self.blank = blank  # answer cutouts of zeros (outside the footprint)
        self.times = []  # when each request arrived (time.monotonic)
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/viewer"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def render(self, ra, dec, size, pixscale):
        from astropy.wcs import WCS

        brick = self.grid.lookup(ra, dec)[0]["BRICKNAME"].decode()
        target = WCS(naxis=2)
        target.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        target.wcs.crval = [ra, dec]
        target.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
        target.wcs.cd = [[-pixscale / 3600, 0], [0, pixscale / 3600]]
        yy, xx = np.mgrid[0:size, 0:size]
        r, d = target.all_pix2world(xx.ravel(), yy.ravel(), 0)
        planes = []
        for band in "grz":
            path = self.tree.coadd_path(brick, band)
            wcs, _ = read_header_wcs(path)
            u, v = wcs.all_world2pix(r, d, 0)
            x0, y0 = int(np.floor(u.min())) - 4, int(np.floor(v.min())) - 4
            x1, y1 = int(np.ceil(u.max())) + 5, int(np.ceil(v.max())) + 5
            with fitsio.FITS(str(path)) as f:
                block = f[1][y0:y1, x0:x1].astype(np.float64)
            planes.append(map_coordinates(block, [v - y0, u - x0], order=3).reshape(size, size))
        return np.array(planes, dtype=np.float32)

    def handle(self, req):
        with self.lock:
            self.requests += 1
            n = self.requests
            self.times.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            url = urllib.parse.urlparse(req.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            if url.path != "/viewer/cutout.fits":
                req.send_error(404, "Not Found")
                return
            if self.always_fail or n <= self.fail_first:
                req.send_response(503, "Service Unavailable")
                if self.retry_after is not None:
                    req.send_header("Retry-After", str(self.retry_after))
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
            if "ra" not in q or "dec" not in q:
                req.send_error(400, "Need ra,dec keywords")
                return
            ra, dec, size = float(q["ra"]), float(q["dec"]), int(q.get("size", 256))
            if n <= self.garbage_first:  # what a proxy or an overloaded service may send with 200
                body = b"<html><body>Service temporarily overloaded</body></html>"
                req.send_response(200)
                req.send_header("Content-Type", "text/html")
                req.send_header("Content-Length", str(len(body)))
                req.end_headers()
                req.wfile.write(body)
                return
            cube = np.zeros((3, size, size), np.float32) if self.blank else \
                self.render(ra, dec, size, float(q.get("pixscale", 0.262)))
            body = service_fits_bytes(cube, ra, dec, bands=q.get("bands", "grz"))
            req.send_response(200)
            req.send_header("Content-Type", "image/fits")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            if n <= self.truncate_first:  # the connection drops mid-answer
                req.wfile.write(body[: len(body) // 2])
                req.close_connection = True
                return
            req.wfile.write(body)
        finally:
            with self.lock:
                self.in_flight -= 1
