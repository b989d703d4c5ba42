"""An A2A client built only from the official SDK's client classes.

The end-to-end tests point it at the gateway to show that an official client
works there as if it talked to the agent. It fetches the agent card at
--card-url, lets the SDK's ClientFactory pick the interface of the chosen
--transport from the card's supportedInterfaces (so it posts where the card
says, with the tenant the card names), then either sends --text (streaming
with --stream), gets the task --task-id, or follows the task --follow-task-id
(SubscribeToTask) until its stream ends.

Every response or stream event is printed as one line of protocol JSON (the
protobuf JSON mapping the SDK itself uses on the wire), then it exits 0. An
SDK error prints `ERROR <type>: <message>` and exits 1.

With --token T, every request (the card fetch included, on every transport)
carries `Authorization: Bearer T`.

Run it with the venv from setup-venv.sh.
"""

import argparse
import asyncio
import json
import sys
import uuid

import grpc.aio
import httpx
from a2a.client import (
    A2ACardResolver,
    ClientCallContext,
    ClientCallInterceptor,
    ClientConfig,
    ClientFactory,
)
from a2a.client.interceptors import AfterArgs, BeforeArgs
from a2a.helpers import new_text_message
from a2a.types.a2a_pb2 import GetTaskRequest, Role, SendMessageRequest, SubscribeToTaskRequest
from a2a.utils.constants import TransportProtocol
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage

TRANSPORTS = {
    'jsonrpc': TransportProtocol.JSONRPC,
    'http_json': TransportProtocol.HTTP_JSON,
    'grpc': TransportProtocol.GRPC,
}
# A client that never hears back must not hang the test that runs it.
TIMEOUT_SECONDS = 60.0


class BearerToken(ClientCallInterceptor):
    """Puts the token on every call; the SDK turns service parameters into
    HTTP headers (JSON-RPC) or gRPC metadata (gRPC)."""

    def __init__(self, token: str) -> None:
        self._header = f'Bearer {token}'

    async def before(self, args: BeforeArgs) -> None:
        if args.context is None:
            args.context = ClientCallContext()
        if args.context.service_parameters is None:
            args.context.service_parameters = {}
        args.context.service_parameters['Authorization'] = self._header

    async def after(self, args: AfterArgs) -> None:
        return None


def emit(response: ProtoMessage) -> None:
    print(json.dumps(MessageToDict(response), ensure_ascii=False), flush=True)


async def run(args: argparse.Namespace) -> None:
    headers = {'Authorization': f'Bearer {args.token}'} if args.token else {}
    async with httpx.AsyncClient(headers=headers, timeout=TIMEOUT_SECONDS) as http:
        # The card sits exactly at --card-url: an empty relative path makes the
        # resolver fetch the base URL itself.
        card = await A2ACardResolver(http, args.card_url, agent_card_path='').get_agent_card()
        config = ClientConfig(
            streaming=args.stream or args.follow_task_id is not None,
            httpx_client=http,
            grpc_channel_factory=grpc.aio.insecure_channel,
            supported_protocol_bindings=[TRANSPORTS[args.transport]],
        )
        interceptors = [BearerToken(args.token)] if args.token else []
        client = ClientFactory(config).create(card, interceptors=interceptors)
        try:
            if args.task_id is not None:
                emit(await client.get_task(GetTaskRequest(id=args.task_id)))
                return
            if args.follow_task_id is not None:
                async for event in client.subscribe(SubscribeToTaskRequest(id=args.follow_task_id)):
                    emit(event)
                return
            message = new_text_message(args.text, role=Role.ROLE_USER)
            message.message_id = args.message_id or str(uuid.uuid4())
            async for event in client.send_message(SendMessageRequest(message=message)):
                emit(event)
        finally:
            await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--card-url', required=True, help='where the agent card is served')
    parser.add_argument('--transport', choices=sorted(TRANSPORTS), default='jsonrpc')
    parser.add_argument('--token', help='sent as "Authorization: Bearer TOKEN" on every request')
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument('--text', help='send a message with this text')
    action.add_argument('--task-id', help='get this task instead of sending')
    action.add_argument('--follow-task-id', help='follow this task (SubscribeToTask) until its stream ends')
    parser.add_argument('--stream', action='store_true', help='send with SendStreamingMessage')
    parser.add_argument('--message-id', help='the messageId to send (default: a new UUID)')
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    # ValueError: the SDK's answer when the card offers no interface of the transport.
    except (A2AError, ValueError) as error:
        message = getattr(error, 'message', None) or str(error)
        # One line, whatever the SDK's message spans.
        print(f'ERROR {type(error).__name__}: {" ".join(message.split())}', flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
