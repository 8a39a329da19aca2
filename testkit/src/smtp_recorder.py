"""A real SMTP server for tests: records every message it accepts as one JSON file.

Started by testkit's SmtpServer with:
    python3 smtp_recorder.py --port PORT --dir MAILDIR --reject-file FILE [--user U --password P]

While FILE exists and is not empty, every message is refused with its text as the reply
(e.g. "451 4.3.0 try again later").

Each accepted message becomes MAILDIR/NNNNNN.eml (the raw message as received) and
MAILDIR/NNNNNN.json (the envelope: mail_from, rcpt_tos), the .json renamed into place
last, so a reader that lists .json files never sees half a message. The server exits when its standard input closes, so it never outlives the
test process that started it, even one killed before it could clean up.
"""

import argparse
import asyncio
import json
import os
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Recorder:
    def __init__(self, maildir, reject_file):
        self.maildir = maildir
        self.reject_file = reject_file
        # Continue numbering after a restart so messages keep their arrival order.
        self.count = sum(1 for name in os.listdir(maildir) if name.endswith(".json"))

    async def handle_DATA(self, server, session, envelope):
        # Read per message, so a test can make the server refuse mail and accept it again
        # without a restart.
        try:
            with open(self.reject_file, encoding="utf-8") as reply:
                reject = reply.read().strip()
        except FileNotFoundError:
            reject = ""
        if reject:
            print("refused message from %s: %s" % (envelope.mail_from, reject), flush=True)
            return reject
        self.count += 1
        stem = os.path.join(self.maildir, "%06d" % self.count)
        with open(stem + ".eml", "wb") as out:
            out.write(envelope.original_content or envelope.content)
        record = {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos)}
        # The envelope is renamed into place last: a .json file means the message is complete.
        with open(stem + ".json.partial", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(stem + ".json.partial", stem + ".json")
        print("accepted message %d from %s to %s" % (self.count, envelope.mail_from, envelope.rcpt_tos), flush=True)
        return "250 Message accepted for delivery"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode("utf-8") == user
            and auth_data.password.decode("utf-8") == password
        )
        # handled=False: aiosmtpd then sends the 535 reply itself.
        return AuthResult(success=ok, handled=False)

    return authenticate


def wait_for_stdin_eof():
    while os.read(sys.stdin.fileno(), 4096):
        pass


async def serve(args):
    handler = Recorder(args.dir, args.reject_file)
    auth = {}
    if args.user is not None:
        auth = {
            "authenticator": authenticator_for(args.user, args.password or ""),
            "auth_required": True,
            # Tests talk plain SMTP on loopback; real deployments use TLS.
            "auth_require_tls": False,
        }

    def factory():
        return SMTP(handler, hostname="testkit.local", enable_SMTPUTF8=True, **auth)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host="127.0.0.1", port=args.port, reuse_address=True)
    print("listening on 127.0.0.1:%d" % args.port, flush=True)
    # Blocks in a worker thread until the test process closes our stdin (or dies).
    await loop.run_in_executor(None, wait_for_stdin_eof)
    server.close()
    await server.wait_closed()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--reject-file", required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
