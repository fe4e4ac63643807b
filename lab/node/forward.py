#!/usr/bin/env python3
"""Forward one TCP port to another, byte for byte: the lab node's way to the apiserver.

The lab's apiserver listens on this machine's loopback, which the node host's network namespace
cannot reach; a site's nodes reach their control plane at an address of their network. This
listens on the node link's host address and connects each client to the apiserver's loopback
port: TLS goes through untouched (the kubelet checks the apiserver's certificate and presents its
own). Usage: forward.py LISTEN_ADDR LISTEN_PORT TARGET_HOST TARGET_PORT
(lab/components/25-node.sh kubelet-up).
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(listen: str, port: int, target: str, target_port: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target, target_port)
        except OSError as exc:
            print(f"forward: cannot reach {target}:{target_port}: {exc}", file=sys.stderr)
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, listen, port, reuse_address=True)
    print(f"forward: {listen}:{port} -> {target}:{target_port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
