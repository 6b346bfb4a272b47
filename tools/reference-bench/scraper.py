# Reads every node's /metrics once a second over kept connections, as Prometheus does, and
# watches node 1's console stream, reading everything, as an open browser tab does: what
# ab.sh and instructions.sh run beside a cluster to measure what metrics and the console cost.
# Nodes on 127.0.0.1, HTTP ports 8201-8203. Bounded: at most an hour of scrapes.
#
#   python3 scraper.py TLS    (TLS: 1 if the nodes serve HTTPS and need root's login, else 0)
import base64, http.client, json, os, socket, ssl, struct, sys, threading, time
secure = sys.argv[1] == "1"
context = ssl._create_unverified_context() if secure else None

def console():
    """Watches node 1's console stream, reading everything, as an open browser tab does."""
    sock = socket.create_connection(("127.0.0.1", 8201), timeout=5)
    if secure:
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /console/ws HTTP/1.1\r\nHost: 127.0.0.1:8201\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    if secure:
        # A masked text frame logging in as root.
        text = json.dumps({"type": "run", "id": 1, "args": ["AUTH", "root", "bench-root-password"]}).encode()
        mask = os.urandom(4)
        head = bytes([0x81, 0x80 | len(text)]) if len(text) < 126 else bytes([0x81, 0xFE]) + struct.pack(">H", len(text))
        sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
    sock.settimeout(None)
    while sock.recv(65536):
        pass

threading.Thread(target=console, daemon=True).start()
conns = {}
for _ in range(3600):
    for port in (8201, 8202, 8203):
        try:
            if port not in conns:
                conns[port] = (http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
                               if secure else http.client.HTTPConnection("127.0.0.1", port, timeout=2))
            conns[port].request("GET", "/metrics")
            conns[port].getresponse().read()
        except Exception:
            conns.pop(port, None)
    time.sleep(1)
