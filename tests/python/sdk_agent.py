"""An A2A echo agent built only from the official SDK's server classes.

The end-to-end tests put it behind the gateway to show that an agent written
with the SDK works unchanged when the gateway fronts it. Every message becomes
a task: submitted, then a `working` status update, then `completed` with an
agent message whose single text part is `sdk-echo: <input text>`. A streaming
request therefore sees the task and both status updates; a plain send gets the
completed task, which `GetTask` returns again later.

It serves JSON-RPC over HTTP (with the agent card) on --port, the HTTP+JSON
binding under /rest on the same port, and the gRPC
binding `lf.a2a.v1.A2AService` on --grpc-port (0 picks a free port; a negative
--grpc-port turns gRPC off). Once both listen it prints one line

    READY {"http": "http://127.0.0.1:PORT", "grpc": "127.0.0.1:PORT"}

("grpc" is null without gRPC) and serves until SIGTERM or SIGINT.

With --require-token T it refuses every request (the card included) that does
not carry `Authorization: Bearer T`: HTTP 401, gRPC UNAUTHENTICATED. Tests use
it to see that a client really sends its token.

Run it with the venv from setup-venv.sh (Python >= 3.13).
"""

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc.aio
import uvicorn
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
)
from a2a.utils.constants import PROTOCOL_VERSION_1_0, TransportProtocol
from a2a.utils.errors import InvalidParamsError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

HOST = '127.0.0.1'
REPLY_PREFIX = 'sdk-echo: '
# Where the HTTP+JSON binding's operations live (`/rest/message:send`, …).
REST_PREFIX = '/rest'


class EchoExecutor(AgentExecutor):
    """Answers every message with its text, prefixed, as a completed task."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        if message is None:
            raise InvalidParamsError(message='no message to echo')
        task = context.current_task
        if task is None:
            # The request context has stamped the message with the task and
            # context ids the request handler expects.
            task = new_task_from_user_message(message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        reply = new_text_message(REPLY_PREFIX + get_message_text(message), context_id=task.context_id, task_id=task.id)
        await updater.complete(reply)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


class Server(uvicorn.Server):
    """A uvicorn server that says when it accepts connections and leaves
    signals to the caller (who also has the gRPC server to stop)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.listening.set()


class RequireToken:
    """ASGI middleware refusing HTTP requests without the bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = f'Bearer {token}'.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] == 'http' and dict(scope['headers']).get(b'authorization') != self._expected:
            await PlainTextResponse('missing or wrong bearer token', status_code=401)(scope, receive, send)
            return
        await self._app(scope, receive, send)


class RequireGrpcToken(grpc.aio.ServerInterceptor):
    """gRPC interceptor answering UNAUTHENTICATED to calls without the token."""

    def __init__(self, token: str) -> None:
        self._expected = f'Bearer {token}'

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if dict(handler_call_details.invocation_metadata or ()).get('authorization') == self._expected:
            return handler
        reason = 'missing or wrong bearer token'

        async def refuse_unary(_request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        async def refuse_stream(_request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            yield  # makes this an async generator, as a server-streaming handler must be

        codec = {
            'request_deserializer': handler.request_deserializer,
            'response_serializer': handler.response_serializer,
        }
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(refuse_stream, **codec)
        return grpc.unary_unary_rpc_method_handler(refuse_unary, **codec)


def agent_card(http_url: str, grpc_address: str | None) -> AgentCard:
    interfaces = [
        AgentInterface(
            url=http_url + '/',
            protocol_binding=TransportProtocol.JSONRPC,
            protocol_version=PROTOCOL_VERSION_1_0,
        ),
        AgentInterface(
            url=http_url + REST_PREFIX,
            protocol_binding=TransportProtocol.HTTP_JSON,
            protocol_version=PROTOCOL_VERSION_1_0,
        ),
    ]
    if grpc_address is not None:
        interfaces.append(
            AgentInterface(
                url=grpc_address,
                protocol_binding=TransportProtocol.GRPC,
                protocol_version=PROTOCOL_VERSION_1_0,
            )
        )
    return AgentCard(
        name='sdk-echo',
        description='Echoes every text message back, prefixed with "sdk-echo: " (agentmesh test agent on the A2A SDK).',
        version='1.0.0',
        supported_interfaces=interfaces,
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=['text/plain'],
        default_output_modes=['text/plain'],
        skills=[
            AgentSkill(
                id='echo',
                name='Echo',
                description='Replies with the text it received, prefixed with "sdk-echo: ".',
                tags=['echo', 'test'],
                examples=['hello'],
            )
        ],
    )


async def serve(port: int, grpc_port: int, token: str | None) -> None:
    # Bound here and handed to uvicorn, so port 0 is resolved before the card
    # (which names the port) is built, with no window for another process.
    http_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    http_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    http_socket.bind((HOST, port))
    http_socket.listen(128)
    http_url = f'http://{HOST}:{http_socket.getsockname()[1]}'

    grpc_server = None
    grpc_address = None
    if grpc_port >= 0:
        grpc_server = grpc.aio.server(interceptors=[RequireGrpcToken(token)] if token else None)
        bound = grpc_server.add_insecure_port(f'{HOST}:{grpc_port}')
        if bound == 0:
            raise OSError(f'cannot bind gRPC on {HOST}:{grpc_port}')
        grpc_address = f'{HOST}:{bound}'

    card = agent_card(http_url, grpc_address)
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, rpc_url='/'),
        *create_rest_routes(handler, path_prefix=REST_PREFIX),
    ]
    app: ASGIApp = Starlette(routes=routes)
    if token:
        app = RequireToken(app, token)
    server = Server(uvicorn.Config(app, log_level='warning', lifespan='off', timeout_graceful_shutdown=5))

    if grpc_server is not None:
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), grpc_server)
        await grpc_server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    http = asyncio.create_task(server.serve(sockets=[http_socket]))
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait([http, listening], return_when=asyncio.FIRST_COMPLETED)
    if http.done():
        # Startup failed; surface why.
        await http
        raise RuntimeError('the HTTP server stopped before it listened')

    print('READY ' + json.dumps({'http': http_url, 'grpc': grpc_address}), flush=True)

    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([http, stopping], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    if grpc_server is not None:
        await grpc_server.stop(grace=5)
    await http
    await handler.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, default=0, help='JSON-RPC (HTTP) port; 0 picks a free one')
    parser.add_argument('--grpc-port', type=int, default=0, help='gRPC port; 0 picks a free one, -1 serves no gRPC')
    parser.add_argument('--require-token', help='refuse requests without "Authorization: Bearer TOKEN"')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args.port, args.grpc_port, args.require_token))
    return 0


if __name__ == '__main__':
    sys.exit(main())
