#!/usr/bin/python3
"""pyhello: a switchyard HTTP plugin written in Python.

It shows that a handler need not be Go: it speaks hashicorp/go-plugin's
handshake and switchyard's proto (plugins/proto/switchyard.proto) itself,
with Debian's python3-grpcio and python3-protobuf and nothing else.

GET / answers "GREETING from VERSION (python, pid PID)"; POST /echo streams
the request body back; /fail raises, to show that a handler's exception
becomes a 500 and the plugin goes on; other paths answer 404.

The kernel runs a content-addressed copy of this file, so the generated
modules beside it are found through PYTHONPATH (the plugin's `env` in the
kernel's configuration); see README.md.
"""

import sys

sys.dont_write_bytecode = True  # leave no __pycache__ beside the modules

import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import traceback
import urllib.parse

import grpc

try:
    import goplugin_pb2 as gp
    import switchyard_pb2 as pb
except ImportError as e:
    sys.exit(f"pyhello: {e}: set PYTHONPATH to the directory holding "
             "switchyard_pb2.py (the kernel runs a copy of this script "
             "from its snapshot directory)")

VERSION = "v1"

# The handshake, as plugins/sdk defines it.
MAGIC_COOKIE_KEY = "SWITCHYARD_PLUGIN"
MAGIC_COOKIE_VALUE = "4f1c0a3e-switchyard-handler"
CORE_PROTOCOL_VERSION = 1  # go-plugin's own
APP_PROTOCOL_VERSION = 1  # switchyard's
SDK_PROTOCOL = 1  # the Calls stream framing, reported by Describe
MAX_MESSAGE = 64 << 20  # the SDK's MaxMessageSize
CHUNK = 32 << 10  # response body bytes per frame, as the Go SDK sends them
BROKER_WAIT = 5.0  # seconds to wait for the Host service's address

# log/slog levels, as Host.Log and ConfigureRequest.log_level number them,
# and hclog's names for them on stderr.
DEBUG, INFO, WARN, ERROR = -4, 0, 4, 8
HCLOG_LEVEL = {DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error"}


class HTTPError(Exception):
    """A request the plugin refuses, with the status to answer."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# ---- the handler ----------------------------------------------------------


class Request:
    """An HTTP request as the kernel parsed it; body arrives as it comes."""

    def __init__(self, m, body):
        self.method = m.method
        self.uri = m.uri
        self.host = m.host
        self.remote_addr = m.remote_addr
        self.listener = m.listener
        # Header names are case-insensitive: keep them lower-case.
        self.headers = {h.name.lower(): list(h.values) for h in m.headers}
        self.body = body
        if not (m.uri.startswith("/") or m.uri == "*" or "://" in m.uri):
            raise HTTPError(400, f"malformed request URI {m.uri!r}")
        split = urllib.parse.urlsplit(m.uri)
        self.path = urllib.parse.unquote(split.path)
        self.query = urllib.parse.parse_qs(split.query)

    def header(self, name, default=""):
        values = self.headers.get(name.lower())
        return values[0] if values else default


class Response:
    """What a handler answers. body is bytes, or an async iterator of bytes
    for a body that is streamed as it is produced."""

    def __init__(self, status=200, body=b"", headers=None):
        self.status = status
        self.body = body
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        self.headers.update(headers or {})


def text(status, message, headers=None):
    return Response(status, (message + "\n").encode(), headers)


class Hello:
    """pyhello's handler: its settings and its routes."""

    SETTINGS = {"greeting"}

    def __init__(self):
        self.greeting = "hello"

    def configure(self, settings):
        """Applies [plugins.NAME.settings]; refuses unknown keys, as the Go
        SDK's Config.Decode does, so that a misspelt key fails the swap."""
        if not isinstance(settings, dict):
            raise ValueError("settings: not a JSON object")
        unknown = sorted(set(settings) - self.SETTINGS)
        if unknown:
            raise ValueError(f"settings: unknown key {unknown[0]!r}")
        greeting = settings.get("greeting", "hello")
        if not isinstance(greeting, str) or not greeting:
            raise ValueError("settings: greeting must be a non-empty string")
        self.greeting = greeting

    async def serve(self, req):
        if req.path == "/":
            if req.method not in ("GET", "HEAD"):
                return text(405, "method not allowed", {"Allow": "GET, HEAD"})
            return text(200, f"{self.greeting} from {VERSION} "
                             f"(python, pid {os.getpid()})")
        if req.path == "/echo":
            if req.method not in ("POST", "PUT"):
                return text(405, "method not allowed", {"Allow": "POST, PUT"})
            ctype = req.header("Content-Type", "application/octet-stream")
            return Response(200, req.body.chunks(), {"Content-Type": ctype})
        if req.path == "/fail":
            raise RuntimeError("pyhello: /fail was asked for")
        return text(404, "404 page not found")


# ---- the Calls streams ----------------------------------------------------


class Body:
    """A request body: the bytes of the first frame, then Body frames. The
    kernel bounds a body's size, so frames queue without flow control."""

    def __init__(self, first, ended):
        self._chunks = collections.deque([first] if first else [])
        self._ended = ended
        self._error = None
        self._more = asyncio.Event()

    def push(self, frame):
        if self._ended:
            return
        if frame.data:
            self._chunks.append(frame.data)
        if frame.end:
            self._ended = True
            self._error = frame.error or None
        self._more.set()

    async def chunks(self):
        """Yields the body as it arrives; raises if it ended with an error
        (the client went away, or sent more than the kernel allows)."""
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self._ended:
                if self._error:
                    raise HTTPError(400, f"request body: {self._error}")
                return
            self._more.clear()
            await self._more.wait()


class Call:
    """One call in flight: its credit for response body bytes, and its
    request body."""

    def __init__(self, call_id, credit, body):
        self.id = call_id
        self.credit = credit
        self.credited = asyncio.Event()
        self.body = body
        self.task = None
        self.head_sent = False  # the head frame went out

    def add_credit(self, n):
        self.credit += n
        self.credited.set()

    async def take(self, n):
        """Waits until the kernel accepts more body and reserves up to n
        bytes of it."""
        while self.credit <= 0:
            self.credited.clear()
            await self.credited.wait()
        k = min(n, self.credit)
        self.credit -= k
        return k


class CallStream:
    """Serves one Calls stream with the Go SDK's semantics: each call runs
    as its own task; frames with the call's id carry more request body,
    credit or a cancellation; replies go out one at a time. When the kernel
    closes its side (it has drained this process) the calls still running
    finish; when the stream breaks they are cancelled."""

    def __init__(self, plugin, context):
        self.plugin = plugin
        self.context = context
        self.calls = {}
        self.send_lock = asyncio.Lock()

    async def run(self):
        try:
            while True:
                frame = await self.context.read()
                if frame is grpc.aio.EOF:
                    break
                self.dispatch(frame)
            tasks = [c.task for c in self.calls.values()]
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for c in list(self.calls.values()):
                c.task.cancel()

    def dispatch(self, m):
        kind = m.WhichOneof("frame")
        c = self.calls.get(m.id)
        if kind == "http":
            self.start(m)
        elif kind in ("dns", "line", "tick"):
            self.spawn(self.send(failure(m.id, f"plugin serves no {kind}")))
        elif c is None:
            if kind not in ("body", "credit", "cancel"):
                # A kind of call from a newer kernel: end it, so the kernel
                # does not wait for it. Frames of ended calls are dropped.
                self.spawn(self.send(failure(
                    m.id, "plugin does not support this kind of call")))
        elif kind == "body" and c.body is not None:
            c.body.push(m.body)
        elif kind == "credit":
            c.add_credit(m.credit.bytes)
        elif kind == "cancel":
            c.task.cancel()

    def spawn(self, coro):
        self.plugin.spawn(coro)

    def start(self, m):
        req = m.http
        c = Call(m.id, req.credit, Body(req.body, req.body_end))
        self.calls[c.id] = c
        timeout = m.timeout_ns / 1e9 if m.timeout_ns > 0 else None
        c.task = asyncio.get_running_loop().create_task(self.serve(c, req, timeout))

    async def serve(self, c, req, timeout):
        try:
            async with asyncio.timeout(timeout):
                await self.serve_http(c, req)
        except (asyncio.CancelledError, TimeoutError):
            # The kernel cancelled the call or its deadline passed (it has
            # the same one): the call is over for the kernel, send nothing.
            pass
        except StreamBroken as e:
            self.plugin.log(DEBUG, "call ended with its stream", error=str(e))
        except Exception as e:  # a fault of the plugin's own: end the call
            self.plugin.log(ERROR, "call failed", uri=req.uri, error=repr(e),
                            traceback=traceback.format_exc())
            with contextlib.suppress(StreamBroken):
                await self.send(failure(c.id, "plugin error"))
        finally:
            del self.calls[c.id]

    async def serve_http(self, c, m):
        try:
            req = Request(m, c.body)
            resp = await self.plugin.handler.serve(req)
            await self.respond(c, resp, req.method == "HEAD")
        except HTTPError as e:
            if c.head_sent:
                await self.send(failure(c.id, str(e)))
            else:
                await self.respond(c, text(e.status, str(e)), False)
        except StreamBroken:
            raise
        except Exception as e:
            self.plugin.log(ERROR, "handler raised",
                            uri=m.uri, error=repr(e),
                            traceback=traceback.format_exc())
            if c.head_sent:
                # The client has a status already: only cutting the answer
                # off tells it something went wrong.
                await self.send(failure(c.id, "handler raised"))
            else:
                await self.respond(c, text(500, "Internal Server Error"), False)

    async def respond(self, c, resp, head_only):
        """Sends resp: the head with the first chunk of body, the rest in
        Body frames within the credit the kernel grants, the last frame
        with end set. A response that fits one chunk is one frame."""
        headers = dict(resp.headers)
        body = resp.body
        if isinstance(body, (bytes, bytearray)):
            if head_only and "Content-Length" not in headers:
                # What net/http answers to HEAD: the length a GET would get.
                headers["Content-Length"] = str(len(body))
            body = aiter_bytes(body)
        if head_only:
            body = aiter_bytes(b"")
        status = resp.status
        hdrs = [pb.Header(name=k, values=[v]) for k, v in headers.items()]
        chunks = rechunk(body)
        data = await anext(chunks, None)
        while True:
            following = await anext(chunks, None) if data is not None else None
            data = data or b""
            while True:
                n = await c.take(len(data)) if data else 0
                end = following is None and n == len(data)
                if not c.head_sent:
                    r = pb.Reply(id=c.id, http=pb.HTTPResponse(
                        status=status, headers=hdrs, body=data[:n], end=end))
                else:
                    r = pb.Reply(id=c.id, body=pb.Body(data=data[:n], end=end))
                await self.send(r)
                c.head_sent = True
                data = data[n:]
                if not data:
                    break
            if following is None:
                return
            data = following

    async def send(self, reply):
        """Writes one frame. gRPC allows one write at a time, and a write
        must not be abandoned half-way, so a call cancelled while it sends
        leaves the write (and the lock) to a shielded task: the kernel
        drops frames of calls it has ended."""
        err = await asyncio.shield(self.write(reply))
        if err is not None:
            raise StreamBroken(repr(err)) from err

    async def write(self, reply):
        async with self.send_lock:
            try:
                await self.context.write(reply)
            except Exception as e:  # returned: no one may be left to raise to
                return e
        return None


class StreamBroken(Exception):
    """A reply could not be written: the stream is gone."""


def failure(call_id, message):
    return pb.Reply(id=call_id, failure=pb.Failure(message=message))


async def aiter_bytes(b):
    if b:
        yield bytes(b)


async def rechunk(body):
    """Yields body's bytes in pieces of at most CHUNK, skipping empty ones."""
    async for piece in body:
        for i in range(0, len(piece), CHUNK):
            yield bytes(piece[i:i + CHUNK])


# ---- go-plugin's services and switchyard's Plugin service ----------------


class Plugin:
    """The gRPC services the process serves, and the connection back to
    the kernel's Host service."""

    def __init__(self, handler):
        self.handler = handler
        self.shutdown = asyncio.Event()
        self.described = False
        self.log_level = INFO
        self.host_log = None  # Host.Log, once Configure gave a broker id
        self.host_channel = None
        self.host_id = 0
        self.brokered = {}  # service id -> ConnInfo the kernel announced
        self.announced = asyncio.Event()
        self.tasks = set()  # fire-and-forget tasks, kept from the GC

    def spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.reap)

    def reap(self, t):
        self.tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log_stderr(DEBUG, "background task failed", {"error": repr(t.exception())})

    def handlers(self):
        def unary(fn, req, resp):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString)

        def streams(fn, req, resp):
            return grpc.stream_stream_rpc_method_handler(
                fn, request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString)

        generic = grpc.method_handlers_generic_handler
        return (
            generic("switchyard.plugin.v1.Plugin", {
                "Describe": unary(self.describe, pb.DescribeRequest, pb.DescribeResponse),
                "Configure": unary(self.configure, pb.ConfigureRequest, pb.ConfigureResponse),
                "Calls": streams(self.calls, pb.Call, pb.Reply),
            }),
            generic("grpc.health.v1.Health", {
                "Check": unary(self.health, gp.HealthCheckRequest, gp.HealthCheckResponse),
            }),
            generic("plugin.GRPCController", {
                "Shutdown": unary(self.stop, gp.Empty, gp.Empty),
            }),
            generic("plugin.GRPCBroker", {
                "StartStream": streams(self.broker, gp.ConnInfo, gp.ConnInfo),
            }),
            generic("plugin.GRPCStdio", {
                "StreamStdio": grpc.unary_stream_rpc_method_handler(
                    self.stdio, request_deserializer=gp.Empty.FromString,
                    response_serializer=gp.StdioData.SerializeToString),
            }),
        )

    async def describe(self, request, context):
        self.described = True
        return pb.DescribeResponse(name="pyhello", version=VERSION,
                                   protocols=["http"], sdk_protocol=SDK_PROTOCOL)

    async def configure(self, request, context):
        try:
            settings = json.loads(request.settings_json or b"{}")
            self.handler.configure(settings)
        except ValueError as e:  # json's errors are ValueErrors too
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        self.log_level = request.log_level
        if request.host_broker_id and request.host_broker_id != self.host_id:
            try:
                await self.connect_host(request.host_broker_id)
            except TimeoutError:
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "connect to host service: no address "
                                    f"for broker id {request.host_broker_id}")
        self.log(DEBUG, "configured", greeting=self.handler.greeting)
        return pb.ConfigureResponse()

    async def connect_host(self, broker_id):
        """Dials the kernel's Host service, whose address the kernel sent on
        the broker stream under broker_id."""
        async with asyncio.timeout(BROKER_WAIT):
            while broker_id not in self.brokered:
                self.announced.clear()
                await self.announced.wait()
        info = self.brokered[broker_id]
        target = f"unix:{info.address}" if info.network == "unix" else info.address
        channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE)])
        if self.host_channel is not None:
            await self.host_channel.close()
        self.host_channel, self.host_id = channel, broker_id
        self.host_log = channel.unary_unary(
            "/switchyard.plugin.v1.Host/Log",
            request_serializer=pb.LogRequest.SerializeToString,
            response_deserializer=pb.LogResponse.FromString)

    async def calls(self, requests, context):
        await CallStream(self, context).run()

    async def health(self, request, context):
        if request.service not in ("", "plugin"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return gp.HealthCheckResponse(status=gp.HealthCheckResponse.SERVING)

    async def stop(self, request, context):
        # go-plugin's host asks this before it kills the process; the reply
        # goes out before the server stops.
        asyncio.get_running_loop().call_soon(self.shutdown.set)
        return gp.Empty()

    async def broker(self, requests, context):
        """GRPCBroker.StartStream: the kernel announces brokered services.
        The plugin announces none of its own."""

        async def read():
            async for info in requests:
                if info.HasField("knock"):
                    continue  # multiplexing, which switchyard does not use
                self.brokered[info.service_id] = info
                self.announced.set()

        await self.until_shutdown(read())

    async def stdio(self, request, context):
        """GRPCStdio.StreamStdio: this plugin writes its output to stderr,
        which the kernel logs line by line, so the stream carries nothing;
        it stays open until the process stops, as go-plugin's does."""
        await self.shutdown.wait()

    async def until_shutdown(self, coro):
        work = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self.shutdown.wait())
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        for t in (work, stop):
            t.cancel()

    def log(self, level, message, **attrs):
        """Sends a record to the kernel's log through Host.Log, or to stderr
        as an hclog JSON line (which the kernel also parses) before Configure
        or when the Host service fails."""
        if level < self.log_level:
            return
        if self.host_log is not None:
            self.spawn(self.send_log(level, message, attrs))
        else:
            log_stderr(level, message, attrs)

    async def send_log(self, level, message, attrs):
        req = pb.LogRequest(level=level, message=message, time_unix_nano=time.time_ns(),
                            attrs=[pb.Attr(key=k, value=str(v)) for k, v in attrs.items()])
        try:
            await self.host_log(req, timeout=5)
        except grpc.aio.AioRpcError as e:
            log_stderr(level, message, dict(attrs, host_log_error=e.code().name))


def log_stderr(level, message, attrs):
    name = HCLOG_LEVEL.get(level, "info")
    record = {"@level": name, "@message": message, "@module": "pyhello", **attrs}
    print(json.dumps(record), file=sys.stderr, flush=True)


# ---- the handshake ----------------------------------------------------------


def socket_path():
    """A fresh path for the plugin's UNIX socket in the directory the host
    names, as go-plugin's own serverListener makes one."""
    fd, path = tempfile.mkstemp(prefix="plugin", dir=os.environ.get("PLUGIN_UNIX_SOCKET_DIR"))
    os.close(fd)
    os.unlink(path)
    return path


async def serve():
    plugin = Plugin(Hello())
    loop = asyncio.get_running_loop()
    # As go-plugin's plugins do: ^C is for the host, which stops plugins
    # itself; SIGTERM stops this one cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop.add_signal_handler(signal.SIGTERM, plugin.shutdown.set)

    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ])
    server.add_generic_rpc_handlers(plugin.handlers())
    path = socket_path()
    if not server.add_insecure_port(f"unix:{path}"):
        sys.exit(f"pyhello: cannot listen on {path}")
    await server.start()
    try:
        group = os.environ.get("PLUGIN_UNIX_SOCKET_GROUP")
        if group:
            shutil.chown(path, group=int(group) if group.isdigit() else group)
            os.chmod(path, 0o660)
        # CORE-PROTOCOL-VERSION|APP-PROTOCOL-VERSION|NETWORK|ADDR|PROTOCOL|
        # SERVER-CERT; a seventh field says whether broker multiplexing is
        # supported, only when the host asks.
        line = f"{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{path}|grpc|"
        if os.environ.get("PLUGIN_MULTIPLEX_GRPC"):
            line += "|false"
        print(line, flush=True)
        # Nothing else may reach the host's handshake reader.
        sys.stdout = sys.stderr
        await plugin.shutdown.wait()
    finally:
        await server.stop(grace=2)
        if plugin.host_channel is not None:
            await plugin.host_channel.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return 0 if plugin.described else 1


def main():
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        sys.exit("pyhello is a switchyard plugin: the switchyard kernel runs "
                 "it, not a shell (see README.md)")
    if os.environ.get("PLUGIN_CLIENT_CERT"):
        # AutoMTLS needs a certificate of the plugin's own, which Python's
        # standard library cannot make; switchyard's host does not ask.
        sys.exit("pyhello: go-plugin AutoMTLS is not supported")
    versions = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", str(APP_PROTOCOL_VERSION))
    if str(APP_PROTOCOL_VERSION) not in versions.split(","):
        sys.exit(f"pyhello: the host speaks protocol versions {versions}, "
                 f"this plugin {APP_PROTOCOL_VERSION}")
    sys.exit(asyncio.run(serve()))


if __name__ == "__main__":
    main()
