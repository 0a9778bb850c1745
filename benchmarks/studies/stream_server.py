"""A tiny MJPEG-over-HTTP camera for the stream tests and the reliability probes: it serves
numbered colour frames until stopped (the camera is unplugged) and starts again on the same
port (plugged back in)."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import cv2
import numpy as np


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        server: MjpegServer = self.server.owner  # type: ignore[attr-defined]
        try:
            while not server.stopping.is_set():
                jpg = server.frame_jpeg()
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                self.wfile.write(head % len(jpg) + jpg + b"\r\n")
                time.sleep(server.period)
        except (BrokenPipeError, ConnectionResetError):
            pass


class MjpegServer:
    def __init__(self, fps: float = 50.0, port: int = 0) -> None:
        self.period = 1.0 / fps
        self.port = port
        self.sent = 0
        self.stopping = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/camera.mjpg"

    def frame_jpeg(self) -> bytes:
        image = np.zeros((48, 64, 3), np.uint8)
        image[:] = (0, 0, 220)  # red: class 0 of the colour model
        image += np.random.default_rng(self.sent).integers(0, 20, image.shape, dtype=np.uint8)
        self.sent += 1
        return cv2.imencode(".jpg", image)[1].tobytes()

    def start(self) -> MjpegServer:
        self.stopping.clear()
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.daemon_threads = True
        httpd.owner = self  # type: ignore[attr-defined]
        self.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self._httpd = httpd
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def silent_server() -> socket.socket:
    """A server that accepts connections and never answers (the caller closes it)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock
