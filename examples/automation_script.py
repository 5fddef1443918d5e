#!/usr/bin/env python3
"""An automation script as it runs inside a sandbox, started by sandboxd.

It uses the ``sandboxd`` package (``pip install ./python``) and talks back
to sandboxd with its own run token (``SANDBOXD_RUN_TOKEN``,
set by sandboxd), the way an OpenHands SDK script does:

1. reads its own status (``GET /v1/runs/{id}``);
2. resolves secrets of its run afresh (``POST /v1/secrets/resolve``), e.g. a
   token that may have been rotated since the run started;
3. does its work (here: pretends to drive a conversation);
4. reports the conversation id and the cost (``POST /v1/runs/{id}/report``),
   which sandboxd adds to the run's completion callback.

Run it through sandboxd from the repository's root, for example (a run
starts in a new, empty work dir of its own: ``--cwd .`` runs it here)::

    sandboxd exec --cwd . --secret DEMO_TOKEN=static:demo-token-1234 -- \\
        python3 examples/automation_script.py --secret DEMO_TOKEN --cost 0.42

Secret values are never printed (sandboxd would mask them in the logs anyway).
"""

import argparse
import os
import sys
import uuid

from sandboxd import Client, SandboxdError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", action="append", default=[], metavar="NAME",
                        help="resolve this secret of the run (its env var name); repeat for more")
    parser.add_argument("--conversation-id", help="the id to report [default: a new one]")
    parser.add_argument("--cost", type=float, default=0.0, help="the cost to report")
    args = parser.parse_args()

    try:
        client = Client.from_env()
        me = client.status()
        print(f"run {me.run_id} is {me.state.value} (pid {me.pid}) in {me.cwd}")

        if args.secret:
            values = client.resolve_secrets(args.secret)
            for name in args.secret:
                value = values[name]
                same = "matches" if os.environ.get(name) == value else "differs from"
                print(f"secret {name}: resolved, {len(value)} characters, {same} its env var")

        conversation_id = args.conversation_id or uuid.uuid4().hex
        print(f"driving conversation {conversation_id} ...")

        after = client.report(conversation_id=conversation_id, cost=args.cost)
        print(f"reported conversation {after.report.conversation_id} at cost {after.report.cost}")
    except SandboxdError as err:
        print(f"automation_script: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
