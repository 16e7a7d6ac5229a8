"""Which S3 server keeps `make run`'s objects (ADR 4): the candidates measured on the same checks.

Candidates, each run as a server process on a free loopback port over its own directory:

- ``moto``: ``moto[server]`` with its request recorder on and the recording replayed at start, as
  the previous release ran it (ADR 2);
- ``localbucket``: the ``localbucket`` script (PyPI), run from ``S3EVAL_LOCALBUCKET`` (default
  /tmp/s3eval/localbucket/localbucket.py) so it need not be installed;
- ``nanio``: ``nanio serve`` (PyPI) as shipped;
- ``genimage``: ``python -m genimage_devstack.s3server``, nanio with what ADR 4 adds around it.

Checks (every one through the ``minio`` client unless said otherwise): the S3 calls genimage makes;
an object kept as a file with its bytes; server RSS growth for 64 MiB stored; 50 concurrent PUTs of
different keys and of one key; acknowledged PUTs present with the same bytes after kill -9 and
restart; whether the server fsyncs the file and its directory before answering (strace of one
PUT); an overwrite killed mid-upload (server killed, and client gone) never served nor listed; SigV4
(wrong secret, unknown key, anonymous, tampered presigned URL key/expiry/signature, expired URL, a
body that does not match its signed hash); start time with 0 and with ``--objects`` objects.

    .venv/bin/python bench/s3_store.py [--only nanio,genimage] [--objects 3000]

Prints a table and writes bench/results/s3_store.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if p and Path(p).resolve() != ROOT / "bench")]

import httpx  # noqa: E402
import urllib3  # noqa: E402
from minio import Minio  # noqa: E402
from minio.error import S3Error  # noqa: E402

from bench.harness import write_results  # noqa: E402
from genimage_devstack.processes import free_port  # noqa: E402

ACCESS, SECRET = "genimage", "genimage-secret"
BUCKET = "genimage-media"
LOCALBUCKET = Path(os.environ.get("S3EVAL_LOCALBUCKET", "/tmp/s3eval/localbucket/localbucket.py"))
STRACE_CALLS = "openat,fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,sendmsg"


class Server:
    def __init__(self, name: str, data: Path) -> None:
        self.name, self.data = name, data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.popen: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"{name}-{self.port}.log"

    def argv(self) -> list[str]:
        py, port, d = sys.executable, str(self.port), str(self.data)
        return {
            "moto": [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
            "localbucket": [py, str(LOCALBUCKET), d, "--host", "127.0.0.1", "--port", port],
            "nanio": [
                py,
                "-m",
                "nanio",
                "serve",
                "--data-dir",
                d,
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            "genimage": [
                py,
                "-m",
                "genimage_devstack.s3server",
                "--data-dir",
                d,
                "--host",
                "127.0.0.1",
                "--port",
                port,
            ],
        }[self.name]

    def env(self) -> dict[str, str]:
        env = {**os.environ, "NANIO_ACCESS_KEY": ACCESS, "NANIO_SECRET_KEY": SECRET}
        if self.name == "moto":
            env.update(MOTO_ENABLE_RECORDING="True", MOTO_RECORDER_FILEPATH=str(self.data / "recording.jsonl"))
        return env

    def start(self, *, strace_to: Path | None = None) -> float:
        """Seconds from spawn until a signed request succeeds (moto: after replaying its recording)."""
        self.data.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        if strace_to is not None:
            argv = ["strace", "-f", "-qq", "-s", "64", "-e", f"trace={STRACE_CALLS}", "-o", str(strace_to), *argv]
        t0 = time.monotonic()
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = t0 + 600
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log}")
            try:
                httpx.get(self.url + "/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise TimeoutError(self.name) from None
                time.sleep(0.02)
        rec = self.data / "recording.jsonl"
        try:
            if self.name == "moto" and rec.exists() and rec.stat().st_size:
                r = httpx.post(f"{self.url}/moto-api/recorder/replay-recording", timeout=600)
                if r.status_code != 200:
                    raise RuntimeError(f"moto replay answered {r.status_code}")
            client(self).bucket_exists(BUCKET)
        except BaseException:
            self.stop()  # a server that failed to come back is not left running
            raise
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kib(self) -> int:
        assert self.popen is not None
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1


_POOL = urllib3.PoolManager(maxsize=64, timeout=urllib3.Timeout(connect=5, read=60), retries=False)


def client(server: Server, *, access: str = ACCESS, secret: str = SECRET) -> Minio:
    return Minio(
        urlsplit(server.url).netloc,
        access_key=access,
        secret_key=secret,
        secure=False,
        region="us-east-1",
        http_client=_POOL,
    )


def get(c: Minio, key: str) -> bytes:
    r = c.get_object(BUCKET, key)
    try:
        return r.read()
    finally:
        r.close()
        r.release_conn()


def put(c: Minio, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    c.put_object(BUCKET, key, io.BytesIO(data), len(data), content_type=content_type)


def err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'code', '') or str(exc)[:120]}"


def refused(fn: Any) -> bool | str:
    try:
        fn()
    except S3Error:
        return True
    except Exception as exc:
        return err(exc)
    return False


# -- checks -------------------------------------------------------------------------------------


def check_api(s: Server) -> dict[str, Any]:
    c, out = client(s), {}
    steps = {
        "make_bucket": lambda: c.bucket_exists(BUCKET) or c.make_bucket(BUCKET),
        "bucket_exists": lambda: c.bucket_exists(BUCKET) is True or 1 / 0,
        "put": lambda: put(c, "eval/api/a.png", b"\x89PNG-a", "image/png"),
        "get": lambda: get(c, "eval/api/a.png") == b"\x89PNG-a" or 1 / 0,
        "stat": lambda: (c.stat_object(BUCKET, "eval/api/a.png").size == 6) or 1 / 0,
        "content_type": lambda: (c.stat_object(BUCKET, "eval/api/a.png").content_type == "image/png") or 1 / 0,
        "list": lambda: (
            [o.object_name for o in c.list_objects(BUCKET, prefix="eval/api/", recursive=True)] == ["eval/api/a.png"]
            or 1 / 0
        ),
        "presigned_get": lambda: (
            httpx.get(c.presigned_get_object(BUCKET, "eval/api/a.png", expires=timedelta(seconds=60))).content
            == b"\x89PNG-a"
            or 1 / 0
        ),
        "remove": lambda: c.remove_object(BUCKET, "eval/api/a.png"),
        "gone_after_remove": lambda: refused(lambda: c.stat_object(BUCKET, "eval/api/a.png")) is True or 1 / 0,
    }
    for name, step in steps.items():
        try:
            step()
            out[name] = "ok"
        except Exception as exc:
            out[name] = "FAIL " + err(exc)
    return out


def check_disk_and_ram(s: Server) -> dict[str, Any]:
    c = client(s)
    probe = os.urandom(256 * 1024)
    put(c, "eval/disk/probe.bin", probe)
    found = [
        str(p.relative_to(s.data))
        for p in s.data.rglob("*")
        if p.is_file() and p.stat().st_size == len(probe) and p.read_bytes() == probe
    ]
    before = s.rss_kib()
    for i in range(64):
        put(c, f"eval/ram/{i}.bin", os.urandom(1024 * 1024))
    after = s.rss_kib()
    rec = s.data / "recording.jsonl"
    return {
        "object_as_file": found[0] if found else None,
        "rss_growth_mib_for_64_mib": round((after - before) / 1024, 1),
        "recording_mib": round(rec.stat().st_size / 2**20, 1) if rec.exists() else None,
    }


def check_concurrency(s: Server) -> dict[str, Any]:
    c = client(s)
    diff = {f"eval/conc/diff/{i}": os.urandom(64 * 1024) for i in range(50)}
    same = [os.urandom(1024 * (i + 1)) for i in range(50)]  # sizes differ, so a mix-up shows

    def attempt(fn: Any) -> str | None:
        try:
            fn()
        except Exception as exc:
            return err(exc)
        return None

    with ThreadPoolExecutor(50) as pool:
        e1 = [e for e in pool.map(lambda kv: attempt(lambda: put(c, *kv)), diff.items()) if e]
        e2 = [e for e in pool.map(lambda d: attempt(lambda: put(c, "eval/conc/same", d)), same) if e]
    wrong = [k for k, v in diff.items() if attempt(lambda k=k, v=v: get(c, k) == v or 1 / 0)]
    final = get(c, "eval/conc/same")
    st = c.stat_object(BUCKET, "eval/conc/same")
    out: dict[str, Any] = {
        "different_keys_errors": len(e1),
        "different_keys_wrong_bytes": len(wrong),
        "same_key_errors": len(e2),
        "same_key_final_is_one_written": final in same,
        "same_key_stat_matches_bytes": st.size == len(final)
        and (st.etag or "").strip('"') == hashlib.md5(final).hexdigest(),
        "error_samples": sorted(set(e1 + e2))[:3],
    }
    rec = s.data / "recording.jsonl"
    if rec.exists():
        bad = 0
        for line in rec.read_text(errors="replace").splitlines():
            try:
                json.loads(line)
            except ValueError:
                bad += 1
        out["recording_unparsable_lines"] = bad
    return out


def check_kill9(s: Server) -> dict[str, Any]:
    c = client(s)
    objs = {f"eval/kill/{i}": os.urandom(16 * 1024) for i in range(200)}
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: put(c, *kv), objs.items()))
    rate = round(len(objs) / (time.monotonic() - t0))
    s.kill()  # right after the last acknowledgement
    try:
        s.start()
    except Exception as exc:
        return {"puts_per_s_8_threads": rate, "restart": "FAIL " + err(exc), "acknowledged_present": 0, "of": len(objs)}
    ok = 0
    for k, v in objs.items():
        try:
            ok += get(client(s), k) == v
        except Exception:
            continue
    return {"puts_per_s_8_threads": rate, "restart": "ok", "acknowledged_present": ok, "of": len(objs)}


def _strace_calls(trace: Path) -> list[tuple[str, str]]:
    pending: dict[str, str] = {}
    calls = []
    for line in trace.read_text(errors="replace").splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")]
            continue
        m = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
        if m:
            rest = pending.pop(pid, "") + m.group(1)
        name = rest.partition("(")[0]
        calls.append((name, rest))
    return calls


def check_fsync(name: str, tmp: Path) -> dict[str, Any]:
    """One PUT under strace: is the file fsynced, renamed into place, and its directory fsynced,
    all before the 200 goes out?"""
    s = Server(name, tmp / f"{name}-strace")
    trace = tmp / f"{name}.strace"
    s.start(strace_to=trace)
    c = client(s)
    if not c.bucket_exists(BUCKET):
        c.make_bucket(BUCKET)
    key = "eval/fsync/probe.bin"
    put(c, key, os.urandom(100_000))
    time.sleep(0.3)  # let strace flush the answer
    s.stop()
    calls = _strace_calls(trace)
    fdpath: dict[str, str] = {}
    synced: list[str] = []
    rename: tuple[int, str, str] | None = None
    acked = False
    for call, text in calls:
        if call == "openat":
            m = re.search(r'"([^"]+)".*= (\d+)$', text)
            if m:
                fdpath[m.group(2)] = m.group(1)
        elif call in ("fsync", "fdatasync"):
            fd = re.match(r"\w+\((\d+)", text)
            synced.append(fdpath.get(fd.group(1), "?") if fd else "?")
        elif call.startswith("rename"):
            paths = re.findall(r'"([^"]+)"', text)
            if len(paths) >= 2 and paths[1].endswith(key):
                rename = (len(synced), paths[0], paths[1])
        elif rename is not None and re.search(r"HTTP/1\.[01] 200", text):
            acked = True
            break
    if rename is None:
        return {
            "temp_file_then_rename": False,
            "file_fsync_before_ack": bool(synced),
            "dir_fsync_before_ack": False,
            "fsyncs": len(synced),
        }
    at, tmp_path, final = rename
    return {
        "temp_file_then_rename": True,
        "file_fsync_before_ack": tmp_path in synced[:at],
        "dir_fsync_before_ack": acked and os.path.dirname(final) in synced[at:],
        "fsyncs": len(synced),
    }


def _start_torn_put(s: Server, key: str, total: int, sent: int) -> socket.socket:
    url = client(s).presigned_put_object(BUCKET, key, expires=timedelta(minutes=5))
    parts = urlsplit(url)
    sock = socket.create_connection(("127.0.0.1", s.port))
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Length: {total}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    sock.sendall(head.encode())
    sock.sendall(os.urandom(sent))
    return sock


def check_torn(s: Server) -> dict[str, Any]:
    c = client(s)
    key, v1 = "eval/torn/big.bin", os.urandom(1024 * 1024)
    put(c, key, v1)
    out: dict[str, Any] = {}
    # 1. The server is killed while it receives an overwrite.
    sock = _start_torn_put(s, key, 32 * 2**20, 8 * 2**20)
    time.sleep(0.5)
    s.kill()
    sock.close()
    s.start()
    c = client(s)
    out["server_killed_old_version_intact"] = get(c, key) == v1
    listed = sorted(o.object_name for o in c.list_objects(BUCKET, prefix="eval/torn/", recursive=True))
    out["server_killed_listing"] = listed
    out["server_killed_partial_listed"] = listed != [key]
    # 2. The client goes away mid-upload; the server lives on.
    sock = _start_torn_put(s, key, 32 * 2**20, 8 * 2**20)
    time.sleep(0.3)
    sock.close()
    time.sleep(1.0)
    out["client_gone_old_version_intact"] = get(c, key) == v1
    listed = sorted(o.object_name for o in c.list_objects(BUCKET, prefix="eval/torn/", recursive=True))
    out["client_gone_partial_listed"] = listed != [key]
    leftovers = (
        [
            str(p.relative_to(s.data))
            for p in (s.data / BUCKET / "eval" / "torn").glob("*")
            if p.is_file() and p.name != "big.bin"
        ]
        if (s.data / BUCKET / "eval" / "torn").exists()
        else []
    )
    out["staging_files_left_on_disk"] = leftovers
    if leftovers:
        name = leftovers[0].rsplit("/", 1)[-1]
        try:
            body = get(c, f"eval/torn/{name}")
            out["staging_file_served_bytes"] = len(body)
        except Exception as exc:
            out["staging_file_served_bytes"] = err(exc)
    return out


def check_sigv4(s: Server) -> dict[str, Any]:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    c = client(s)
    put(c, "eval/sig/a.txt", b"secret a")
    put(c, "eval/sig/b.txt", b"secret b")
    url = c.presigned_get_object(BUCKET, "eval/sig/a.txt", expires=timedelta(seconds=60))

    def status(u: str) -> int:
        return httpx.get(u).status_code

    other = url.replace("/eval/sig/a.txt?", "/eval/sig/b.txt?")
    longer = re.sub(r"X-Amz-Expires=\d+", "X-Amz-Expires=604800", url)
    sig = re.search(r"X-Amz-Signature=([0-9a-f]+)", url)
    assert sig
    flipped = url.replace(sig.group(1), sig.group(1)[:-1] + ("0" if sig.group(1)[-1] != "0" else "1"))
    short = c.presigned_get_object(BUCKET, "eval/sig/a.txt", expires=timedelta(seconds=1))
    # Body swapped under a valid signature over another body's hash.
    signed_body, sent_body = b"A" * 1000, b"B" * 1000
    req = AWSRequest(
        "PUT",
        f"{s.url}/{BUCKET}/eval/sig/swapped.txt",
        data=signed_body,
        headers={"x-amz-content-sha256": hashlib.sha256(signed_body).hexdigest()},
    )
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(req)
    swapped = httpx.put(req.url, content=sent_body, headers={k: v for k, v in req.headers.items()})
    stored_swapped = refused(lambda: c.stat_object(BUCKET, "eval/sig/swapped.txt")) is not True
    out = {
        "wrong_secret_refused": refused(lambda: put(client(s, secret="wrong"), "eval/sig/w.txt", b"w")),
        "wrong_secret_not_stored": refused(lambda: c.stat_object(BUCKET, "eval/sig/w.txt")) is True,
        "unknown_access_key_refused": refused(lambda: client(s, access="nobody", secret="x").bucket_exists(BUCKET)),
        "anonymous_get_refused": httpx.get(f"{s.url}/{BUCKET}/eval/sig/a.txt").status_code in (401, 403),
        "presigned_ok_status": status(url),
        "tampered_key_status": status(other),
        "tampered_expiry_status": status(longer),
        "tampered_signature_status": status(flipped),
        "body_not_matching_signed_hash_status": swapped.status_code,
        "body_not_matching_signed_hash_stored": stored_swapped,
    }
    time.sleep(2.5)
    out["expired_status"] = status(short)
    return out


def check_start_time(name: str, tmp: Path, objects: int) -> dict[str, Any]:
    s = Server(name, tmp / f"{name}-start")
    out: dict[str, Any] = {}
    out["empty_s"] = round(min(_restart(s) for _ in range(2)), 3)
    c = client(s)
    s.start()
    if not c.bucket_exists(BUCKET):
        c.make_bucket(BUCKET)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: put(c, f"eval/start/{i // 100}/{i}.bin", os.urandom(4096)), range(objects)))
    s.stop()
    out[f"with_{objects}_objects_s"] = round(min(_restart(s) for _ in range(2)), 3)
    return out


def _restart(s: Server) -> float:
    try:
        return s.start()
    finally:
        s.stop()


def _fresh(name: str, data: Path) -> Server:
    s = Server(name, data)
    s.start()
    client(s).make_bucket(BUCKET)
    return s


def evaluate(name: str, tmp: Path, objects: int) -> dict[str, Any]:
    s = Server(name, tmp / name)
    result: dict[str, Any] = {}
    s.start()
    try:
        result["api"] = check_api(s)
        result["disk"] = check_disk_and_ram(s)
        result["sigv4"] = check_sigv4(s)
        result["kill9"] = check_kill9(s)
        if result["kill9"]["restart"] != "ok":  # go on with the other checks on a new directory
            s = _fresh(name, tmp / f"{name}-after-kill9")
        result["concurrency"] = check_concurrency(s)
        s.kill()
        try:
            s.start()
            result["restart_after_concurrency"] = "ok"
        except Exception as exc:
            result["restart_after_concurrency"] = "FAIL " + err(exc)
            s = _fresh(name, tmp / f"{name}-after-concurrency")
        result["torn"] = check_torn(s)
    finally:
        s.stop()
    result["fsync"] = check_fsync(name, tmp)
    result["start_time"] = check_start_time(name, tmp, objects)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="moto,localbucket,nanio,genimage")
    parser.add_argument("--objects", type=int, default=3000)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="genimage-s3eval-") as tmp:
        for name in args.only.split(","):
            print(f"== {name}", flush=True)
            try:
                results[name] = evaluate(name, Path(tmp), args.objects)
            except Exception as exc:
                results[name] = {"error": err(exc)}
            print(json.dumps(results[name], indent=1), flush=True)
    write_results("s3_store", {"objects_for_start_time": args.objects, "candidates": results})


if __name__ == "__main__":
    main()
