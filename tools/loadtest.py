"""Load test of the Photo tab's API: many clients uploading at once, on this machine only.

    python -m tools.loadtest --clients 20 --requests 10              # starts `python app.py --offline` itself
    python -m tools.loadtest --url http://127.0.0.1:7860 --pid 1234  # an app already running (pid: for memory)
    python -m tools.loadtest --soak 1000 --every 100                 # 1,000 new sessions: does memory level off?

Each client (a thread with its own gradio_client) uploads its own copy of --image (one pixel
changed, as different users send different photos) --requests times, one after another, after
one warm-up request each. --same-image sends the identical file from every client instead: Gradio
caches outputs under a hash of their content, so identical answers written and served at the same
moment can race (docs/serving.md, "Load"). Prints requests ok, errors, p50 / p95 latency,
throughput, and the server's resident memory before and after. Only loopback URLs are accepted:
this is not a tool for other people's servers. The whole run is bounded by --time-limit.

--soak N sends N requests, each from a new session (as N visitors would), --clients at a time, and
reports the server's memory and its cache folder's disk use after every --every sessions: what a
Space keeps per visitor shows there, and it must level off.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT / "demo" / "examples" / "grace_hopper.jpg"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (Linux /proc), or None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, wait_s: float = 180, cache_dir: Path | None = None) -> subprocess.Popen:
    """`python app.py --offline` on a free loopback port, returned once it answers."""
    import httpx

    env = {**os.environ, **({"GRADIO_TEMP_DIR": str(cache_dir)} if cache_dir else {})}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--offline", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode} before it served")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise SystemExit(f"the app did not answer within {wait_s:.0f} s")


def client_images(image: Path, clients: int, folder: Path, offset: int = 0) -> list[Path]:
    """One copy of `image` per client, each with one pixel changed, so no two clients send the same photo."""
    from PIL import Image

    paths = []
    with Image.open(image) as im:
        base = im.convert("RGB")
    for i in range(clients):
        copy = base.copy()
        n = offset + i
        copy.putpixel((n % copy.width, n // copy.width % copy.height), (n * 37 % 256, 255 - n % 256, 128))
        paths.append(folder / f"client_{i:03d}.jpg")
        copy.save(paths[-1], quality=95)
    return paths


def run_load(url: str, images: list[Path], requests: int, time_limit: float) -> dict:
    """Each image's client sends it `requests` times; stops starting new requests after `time_limit` s."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def client_loop(image: Path) -> None:
        client = Client(url, verbose=False)
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            try:
                client.predict(handle_file(str(image)), api_name="/predict")
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as error:  # every failure counts, whatever its kind
                with lock:
                    errors.append(f"{type(error).__name__}: {error}"[:200])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        wait([pool.submit(client_loop, image) for image in images])
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": len(images), "requests_per_client": requests, "ok": len(latencies), "errors": len(errors),
            "error_examples": sorted(set(errors))[:3], "p50_s": float(np.median(lat)),
            "p95_s": float(np.percentile(lat, 95)), "throughput_per_s": len(latencies) / elapsed,
            "seconds": elapsed}


def disk_mb(folder: Path | None) -> float | None:
    if folder is None or not folder.is_dir():
        return None
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def soak(url: str, image: Path, sessions: int, every: int, clients: int, pid: int | None, cache_dir: Path | None,
         time_limit: float) -> list[dict]:
    """`sessions` requests, each from a new session, `clients` at a time; memory and cache after every `every`."""
    from gradio_client import Client, handle_file

    deadline = time.monotonic() + time_limit
    pool_clients = [Client(url, verbose=False) for _ in range(clients)]
    rows = [{"sessions": 0, "memory_mb": rss_mb(pid) if pid else None, "cache_mb": disk_mb(cache_dir), "errors": 0}]
    errors = 0

    def one(client, photo: Path) -> bool:
        client.reset_session()  # a new visitor: a new session hash, as a new browser tab has
        try:
            client.predict(handle_file(str(photo)), api_name="/predict")
            return True
        except Exception:  # counted, whatever its kind
            return False

    done = 0
    with ThreadPoolExecutor(max_workers=clients) as pool:
        while done < sessions and time.monotonic() < deadline:
            batch = min(every, sessions - done)
            results = []
            with tempfile.TemporaryDirectory(prefix="soak_") as folder:
                photos = client_images(image, batch, Path(folder), offset=done)  # each visitor's own photo
                for start in range(0, batch, clients):
                    futures = [pool.submit(one, c, photos[start + i])
                               for i, c in enumerate(pool_clients[: min(clients, batch - start)])]
                    results += [f.result() for f in futures]
            done += batch
            errors += results.count(False)
            rows.append({"sessions": done, "memory_mb": rss_mb(pid) if pid else None,
                         "cache_mb": disk_mb(cache_dir), "errors": errors})
            print(f"{done} sessions: server memory {rows[-1]['memory_mb']} MB, cache {rows[-1]['cache_mb']} MB, "
                  f"{errors} errors", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--url", help="a running app on this machine (default: start one)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, to read its memory")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--same-image", action="store_true", help="every client sends the identical file")
    parser.add_argument("--time-limit", type=float, default=900, help="stop starting requests after this many s")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--soak", type=int, help="instead: this many requests, each from a new session")
    parser.add_argument("--every", type=int, default=100, help="--soak: report after every this many sessions")
    parser.add_argument("--cache-dir", type=Path, help="with --url: the server's Gradio cache folder, for its size")
    args = parser.parse_args(argv)
    if args.soak is not None and not (1 <= args.soak <= 10_000 and 1 <= args.every <= args.soak):
        parser.error("--soak 1-10000 and --every 1 to --soak")
    if not (1 <= args.clients <= 100 and 1 <= args.requests <= 1000):
        parser.error("--clients 1-100 and --requests 1-1000")
    if not args.image.is_file():
        parser.error(f"--image {args.image} not found")
    proc = None
    cache = tempfile.TemporaryDirectory(prefix="loadtest_cache_")
    cache_dir = args.cache_dir
    if args.url:
        if urlparse(args.url).hostname not in LOOPBACK:
            parser.error("--url must be on this machine (127.0.0.1, localhost or ::1)")
        url, pid = args.url, args.pid
    else:
        port = free_port()
        print(f"starting python app.py --offline on port {port} ...", file=sys.stderr)
        cache_dir = Path(cache.name)
        proc = start_app(port, cache_dir=cache_dir)
        url, pid = f"http://127.0.0.1:{port}/", proc.pid
    if args.soak is not None:
        try:
            rows = soak(url, args.image, args.soak, args.every, min(args.clients, 8), pid, cache_dir, args.time_limit)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
            cache.cleanup()
        print("| sessions | server memory MB | cache MB | errors |\n| --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['sessions']} | {r['memory_mb'] and round(r['memory_mb'])} | "
                  f"{r['cache_mb'] and round(r['cache_mb'], 1)} | {r['errors']} |")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"soak": rows, "url": url, "image": str(args.image)}, indent=2) + "\n")
        return
    try:
        with tempfile.TemporaryDirectory(prefix="loadtest_") as folder:
            images = ([args.image] * args.clients if args.same_image
                      else client_images(args.image, args.clients, Path(folder)))
            # One request per client first, not counted: the server's first answers allocate what it
            # keeps (model workspaces, thread pools), which is not growth.
            run_load(url, images, 1, args.time_limit)
            before = rss_mb(pid) if pid else None
            result = run_load(url, images, args.requests, args.time_limit)
        result.update(memory_before_mb=before, memory_after_mb=rss_mb(pid) if pid else None, url=url,
                      image=str(args.image), same_image=args.same_image, cpus=os.cpu_count())
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        cache.cleanup()
    mem = (f"{result['memory_before_mb']:.0f} MB -> {result['memory_after_mb']:.0f} MB"
           if before is not None and result["memory_after_mb"] is not None else "not measured (pass --pid)")
    print(f"requests ok: {result['ok']}, errors: {result['errors']}\n"
          f"latency p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s\n"
          f"throughput {result['throughput_per_s']:.2f} requests/s over {result['seconds']:.0f} s\n"
          f"server memory {mem}")
    for example in result["error_examples"]:
        print("error:", example)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
