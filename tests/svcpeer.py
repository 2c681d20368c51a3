"""A raw client of the store service, for tests: run as another user, it speaks :mod:`wheelstore.service.protocol`
(or breaks it on purpose) and prints what it got as one JSON line.

``python svcpeer.py SOCKET MODE ARG``:

- ``request JSON``: send one request, print the answer;
- ``upload JSON FILE [CUT]``: send an upload's header and FILE's bytes (only the first CUT, then sleep, with CUT);
- ``frame LENGTH``: send a frame header announcing LENGTH bytes, and as many bytes, print the answer;
- ``flood COUNT SECONDS``: open COUNT connections, hold them SECONDS, print how many were told ``busy``;
- ``raw TEXT``: send TEXT as one frame (JSON or not), print the answer;
- ``trickle SECONDS``: announce a 100-byte request and send it a byte every SECONDS, print the answer and when it
  came;
- ``hold COUNT SECONDS``: open COUNT connections, print how many were told ``busy`` at once, hold the rest SECONDS.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

from wheelstore.service.protocol import recv_message, send_message


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(120)
    for _ in range(1000):
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:  # the listen backlog is full (a socket with a timeout does not wait for room)
            time.sleep(0.01)
    raise TimeoutError(f"cannot connect to {path}")


def answer(sock: socket.socket) -> dict[str, object]:
    try:
        return recv_message(sock)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"ok": None, "client_error": f"{type(e).__name__}: {e}"}


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "request":
        sock = connect(path)
        try:
            send_message(sock, json.loads(sys.argv[3]))
        except OSError:  # told busy (and closed) before it was read: the answer is there
            pass
        print(json.dumps(answer(sock)))
    elif mode == "upload":
        sock = connect(path)
        data = open(sys.argv[4], "rb").read()
        header = json.loads(sys.argv[3])
        header.setdefault("size", len(data))
        send_message(sock, header)
        if len(sys.argv) > 5:
            sock.sendall(data[: int(sys.argv[5])])
            print("sent", flush=True)
            time.sleep(3600)
        try:
            sock.sendall(data)
        except OSError as e:
            print(json.dumps({"ok": None, "client_error": str(e), "answer": answer(sock)}))
            return
        print(json.dumps(answer(sock)))
    elif mode == "frame":
        sock = connect(path)
        length = int(sys.argv[3])
        sock.sendall(struct.pack(">I", length))
        try:
            sock.sendall(b"{" * min(length, 1 << 21))
        except OSError:
            pass
        print(json.dumps(answer(sock)))
    elif mode == "raw":
        sock = connect(path)
        data = sys.argv[3].encode()
        sock.sendall(struct.pack(">I", len(data)) + data)
        print(json.dumps(answer(sock)))
    elif mode == "trickle":
        sock, start = connect(path), time.monotonic()
        sock.sendall(struct.pack(">I", 100))
        sock.settimeout(float(sys.argv[3]))
        while True:
            try:
                sock.sendall(b" ")
                got = recv_message(sock)
            except TimeoutError:
                continue
            except Exception as e:  # noqa: BLE001 - reported to the test
                got = {"ok": None, "client_error": f"{type(e).__name__}: {e}"}
            print(json.dumps({**got, "after": time.monotonic() - start}))
            break
    elif mode == "hold":
        held = [connect(path) for _ in range(int(sys.argv[3]))]
        busy = 0
        for sock in held:
            sock.settimeout(0.5)
            try:
                busy += str(recv_message(sock).get("error", "")).startswith("busy")
            except Exception:  # noqa: BLE001 - a served connection says nothing until asked
                pass
        print(json.dumps({"held": len(held), "busy": busy}), flush=True)
        time.sleep(float(sys.argv[4]))
    elif mode == "flood":
        held, busy = [], 0
        for _ in range(int(sys.argv[3])):
            held.append(connect(path))
        time.sleep(float(sys.argv[4]))
        for sock in held:
            sock.settimeout(0.2)
            try:
                got = recv_message(sock)
                busy += got.get("error", "").startswith("busy")
            except Exception:  # noqa: BLE001 - a served connection says nothing until asked
                pass
            sock.close()
        print(json.dumps({"held": len(held), "busy": busy}))


if __name__ == "__main__":
    main()
