"""migration-guard node hookscript: vetoes incoming live migrations the node's CPU cannot run. Stdlib
only; imported by the launcher migration-guard-hook beside it (so its bytecode is cached). Every VM
start runs it: no json/urllib/http.client/argparse/logging; HTTP/1.1 over the C socket module, ssl
imported only for https URLs. See --help and README.md."""

import os
import sys
import time  # built into the interpreter: costs nothing

CONFIG_PATH = "/etc/migration-guard/hook.conf"
CHAIN_NAME = "chain.conf"  # next to hook.conf: lines "VMID=/abs/path/of/previous/hook [storage:snippets/file]"

EXIT_OK, EXIT_VENDOR, EXIT_FEATURES, EXIT_MACHINE, EXIT_OTHER, EXIT_NO_DECISION = 0, 1, 2, 3, 4, 5
EXIT_USAGE = 64  # called wrongly by hand (Proxmox always passes <vmid> <phase>); no veto code

HELP = """usage: migration-guard-hook <vmid> <phase>   (run by Proxmox VE as the VM's hookscript) | --help

On 'pre-start' of an incoming live migration (PVE_MIGRATED_FROM set) it asks the migration-guard
service whether this node's CPU can run the VM and exits non-zero to stop it when not. Every other
phase and start exits 0 at once without a network call. More: README.md.

config: /etc/migration-guard/hook.conf (other path: MIGRATION_GUARD_CONFIG), "key = value" lines:
  url         service URL, e.g. https://guard.example:8443          env MIGRATION_GUARD_URL
  token       service token (prefer token_file)                     env MIGRATION_GUARD_TOKEN
  token_file  file holding the token (mode 0600, root)
  timeout     seconds for the whole run, retries included (3)       env MIGRATION_GUARD_TIMEOUT
  mode        enforce | warn (never vetoes, reports) | off (enforce) env MIGRATION_GUARD_MODE
  fail        open | closed: what to do without a decision (open)   env MIGRATION_GUARD_FAIL
  ca_file     CA bundle that signs the service's HTTPS certificate
  node        this node's name (short hostname)                     env MIGRATION_GUARD_NODE
chaining: chain.conf next to hook.conf, lines "VMID=/path/of/previous/hook": that hook runs first
  (same arguments and environment); its non-zero exit is honoured.

exit codes (the source's migration log shows only "failed: exit code N"):
  0  allowed (or mode warn/off, or no decision with fail = open)
  1  vetoed: CPU vendor mismatch (Intel <-> AMD)
  2  vetoed: this node lacks CPU features the VM's CPU type needs
  3  vetoed: the VM's machine version is newer than this node's QEMU
  4  vetoed: any other reason
  5  no decision (unreachable, timeout, error, cut or malformed answer, bad config), fail = closed
  64 wrong arguments (not "VMID PHASE"; Proxmox never calls it so)
  a previous (chained) hookscript's non-zero exit code is passed through unchanged

node installer (standard library, beside this file): migration-guard-hook install | attach | status |
  uninstall (each with --help); the node kit's cluster install: migration-guard-hook rollout --help
"""


def say(text):
    sys.stderr.write("migration-guard: " + text + "\n")
    sys.stderr.flush()


def read_text(path, what):
    """-> (text, None), or (None, the problem in one line) when the file cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(), None
    except FileNotFoundError:
        return None, "%s %s does not exist" % (what, path)
    except OSError as exc:
        return None, "cannot read %s %s: %s" % (what, path, exc.strerror or exc)
    except UnicodeDecodeError:
        return None, "%s %s is not UTF-8 text" % (what, path)


def parse_kv(text):
    """key=value lines (the service's answer, chain.conf) -> dict; the first of a key wins."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip():
            out.setdefault(k.strip(), v.strip())
    return out


def one_line(text, limit=600):
    """Service text made safe for a single task-log line."""
    out = "".join(c if c >= " " and c != "\x7f" else " " for c in text).strip()
    return out if len(out) <= limit else out[: limit - 3] + "..."


# --- chaining -----------------------------------------------------------------------------------

def config_path():
    return os.environ.get("MIGRATION_GUARD_CONFIG") or CONFIG_PATH


def previous_hook(vmid):
    """The absolute path of the hookscript this VM had before migration-guard, or None."""
    text, _ = read_text(os.path.join(os.path.dirname(config_path()), CHAIN_NAME), CHAIN_NAME)
    parts = parse_kv(text or "").get(vmid, "").split()
    return parts[0] if parts else None


def run_previous(vmid, phase):
    """Run the previous hookscript with our arguments and environment. Returns its exit code."""
    prev = previous_hook(vmid)
    if not prev or os.path.realpath(prev) == os.path.realpath(sys.argv[0]):
        return 0  # none, or ourselves (never chain to ourselves)
    if not os.access(prev, os.X_OK):
        say("previous hookscript %s of VM %s is missing or not executable; skipped it" % (prev, vmid))
        return 0
    sys.stdout.flush()  # (say() flushes stderr itself)
    try:
        pid = os.posix_spawn(prev, [prev, vmid, phase], os.environ)
        _, status = os.waitpid(pid, 0)
    except OSError as exc:
        say("could not run previous hookscript %s: %s; skipped it" % (prev, exc.strerror or exc))
        return 0
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8


# --- configuration ------------------------------------------------------------------------------

class NoDecision(Exception):
    """No usable decision (bad url, service unreachable, bad answer); the message is the reason."""


class Retryable(NoDecision):
    pass


def load_config():
    """Returns (settings dict, list of problems). Env overrides the file."""
    problems = []
    conf = {"url": "", "token": "", "token_file": "", "timeout": "3", "mode": "enforce",
            "fail": "open", "ca_file": "", "node": ""}
    path = config_path()
    text, problem = read_text(path, "config file")
    if problem and not (problem.endswith("does not exist") and os.environ.get("MIGRATION_GUARD_URL")):
        problems.append(problem)  # no file at all is fine when the environment gives the url
    for n, line in enumerate((text or "").splitlines(), 1):
        key, sep, value = line.strip().partition("=")
        key, value = key.strip().lower().replace("-", "_"), value.strip()
        if not line.strip() or line.strip()[0] in "#;" or (sep and key == "remote_unknown"):
            continue  # (remote_unknown: read by earlier releases, for remote migrations, which never run this)
        if not sep or key not in conf:
            problems.append("%s line %d: expected one of %s as 'key = value'" % (path, n, ", ".join(conf)))
            continue
        quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"
        conf[key] = value[1:-1] if quoted else value
    for key in ("url", "token", "mode", "fail", "timeout", "node"):
        conf[key] = os.environ.get("MIGRATION_GUARD_" + key.upper(), "").strip() or conf[key]
    conf["mode"], conf["fail"] = conf["mode"].lower(), conf["fail"].lower()
    if conf["fail"] not in ("open", "closed"):
        problems.append("fail = %r is not open or closed; using open" % conf["fail"])
        conf["fail"] = "open"
    if conf["mode"] not in ("enforce", "warn", "off"):
        problems.append("mode = %r is not enforce, warn or off" % conf["mode"])
    try:
        t = float(conf["timeout"])
        if not 0 < t <= 120:
            raise ValueError
        conf["timeout"] = t
    except ValueError:
        problems.append("timeout = %r is not a number of seconds between 0 and 120; using 3" % conf["timeout"])
        conf["timeout"] = 3.0
    if not conf["url"] and not problems:
        problems.append("no service url (set url in %s or MIGRATION_GUARD_URL)" % path)
    if not conf["token"] and conf["token_file"]:
        tf = conf["token_file"]
        text, problem = read_text(tf, "token_file")
        if problem:
            problems.append(problem)
        else:
            conf["token"] = text.strip()
            try:
                if os.stat(tf).st_mode & 0o044:
                    say("warning: token file %s is readable by other users; run: chmod 600 %s" % (tf, tf))
            except OSError:
                pass  # gone since it was read: the token is in hand
    return conf, problems


def parse_url(url):
    """-> (scheme, host, port, path prefix). Raises NoDecision."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise NoDecision("url %r must start with http:// or https://" % url)
    hostport, _, path = rest.partition("/")
    if "@" in hostport:
        raise NoDecision("url must not carry credentials; use token_file")
    port = 443 if scheme == "https" else 80
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else port
    else:
        host, sep, p = hostport.rpartition(":")
        host, port = (host, p) if sep else (hostport, port)
    if not (str(port).isascii() and str(port).isdigit() and 0 < int(port) < 65536):
        raise NoDecision("url %r has a bad port" % url)
    port = int(port)
    if not host:
        raise NoDecision("url %r has no host" % url)
    return scheme, host, port, "/" + path.strip("/") if path.strip("/") else ""


# --- HTTP ---------------------------------------------------------------------------------------

def json_str(s):
    return '"' + "".join("\\" + c if c in '"\\' else "\\u%04x" % ord(c) if c < " " or c in "\x7f\u2028\u2029"
                         else c for c in s) + '"'


def remaining(deadline, now):
    left = deadline - now()
    if left <= 0.01:
        raise NoDecision("no answer within the timeout")
    return left


def connect(conf, scheme, host, port, deadline, now):
    """A socket connected to host:port, TLS-wrapped for https. Raises NoDecision; Retryable when
    the name does not resolve or nobody accepts the connection (worth another try)."""
    if scheme == "https":
        import socket as net
        import ssl
        try:
            ctx = ssl.create_default_context(cafile=conf["ca_file"] or None)
        except (OSError, ssl.SSLError) as exc:
            raise NoDecision("cannot load ca_file %s: %s" % (conf["ca_file"], exc)) from None
    else:
        import _socket as net  # the C module alone: importing socket costs every start time
    try:
        # bytes, so that a plain ASCII name does not import the (slow) idna codec
        infos = net.getaddrinfo(host.encode("ascii") if host.isascii() else host.encode("idna"),
                                port, 0, net.SOCK_STREAM)
    except OSError as exc:
        raise Retryable("cannot resolve %s: %s" % (host, exc.strerror or exc)) from None
    err = None
    for family, stype, proto, _, addr in infos:
        sock = net.socket(family, stype, proto)
        try:
            sock.settimeout(remaining(deadline, now))
            sock.connect(addr)
            break
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise NoDecision("no answer within the timeout (connecting to %s:%d)" % (host, port)) from None
            err = exc
    else:
        raise Retryable("cannot reach %s:%d: %s" % (host, port, (err and err.strerror) or err))
    if scheme != "https":
        return sock
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise NoDecision("TLS certificate of %s not trusted (%s); check ca_file"
                         % (host, exc.verify_message)) from None
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise NoDecision("no answer within the timeout (TLS handshake with %s)" % host) from None
        raise NoDecision("TLS handshake with %s failed: %s" % (host, exc)) from None


def http_post(conf, target, body, deadline, now):
    """POST body to the service's /v1/decisions -> (status, headers, body text). Raises NoDecision."""
    scheme, host, port, prefix = target
    head = [
        "POST %s/v1/decisions HTTP/1.1" % prefix,
        "Host: %s" % (host if port in (80, 443) else "%s:%d" % (host if ":" not in host else "[" + host + "]", port)),
        "User-Agent: migration-guard-hook/1",
        "Accept: text/plain",
        "Content-Type: application/json",
        "Content-Length: %d" % len(body),
        "Connection: close",
    ]
    if conf["token"]:
        head.append("Authorization: Bearer " + conf["token"])
    # the time this run has left: the service answers before it (e.g. about a hanging node)
    head.append("X-Migration-Guard-Budget-Ms: %d" % int(remaining(deadline, now) * 1000))
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + body
    sock = connect(conf, scheme, host, port, deadline, now)
    chunks = []
    try:
        sock.settimeout(remaining(deadline, now))
        sock.sendall(request)
        size = 0
        while True:
            sock.settimeout(remaining(deadline, now))
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > 1 << 20:
                raise NoDecision("answer of %s:%d is larger than 1 MiB" % (host, port))
            if read_answer(b"".join(chunks), False) is not None:
                break  # a server that keeps the connection open despite "Connection: close"
    except OSError as exc:
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise NoDecision("no answer from %s:%d within the timeout" % (host, port)) from None
        raise NoDecision("connection to %s:%d broke: %s" % (host, port, exc.strerror or exc)) from None
    finally:
        sock.close()
    return read_answer(b"".join(chunks), True)


def read_answer(raw, closed):
    """-> (status, headers dict lower-case, body text) once the WHOLE answer is in raw; None while
    more may come (closed False). Raises NoDecision for a malformed or (closed True) cut answer."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        if not closed:
            return None
        raise NoDecision("malformed HTTP answer (%d bytes, no end of headers)" % len(raw))
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise NoDecision("malformed HTTP status line %r" % one_line(lines[0], 80))
    pairs = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    headers = dict(pairs)
    lengths = {v for k, v in pairs if k == "content-length"}
    coding = headers.get("transfer-encoding", "").lower()
    if coding and lengths:
        raise NoDecision("malformed answer: both Content-Length and Transfer-Encoding")
    if coding:
        if coding != "chunked":
            raise NoDecision("malformed answer: unsupported Transfer-Encoding %r" % one_line(coding, 40))
        body = dechunk(body, closed)
    elif lengths:
        value = lengths.pop()
        if lengths or not value.isascii() or not value.isdigit():
            raise NoDecision("malformed answer: Content-Length %r" % one_line(headers["content-length"], 40))
        want = int(value)
        if len(body) > want:
            raise NoDecision("malformed answer: longer than its Content-Length (%d bytes, %d announced)"
                             % (len(body), want))
        if len(body) < want:
            if not closed:
                return None
            raise NoDecision("cut answer: %d of %d bytes (Content-Length) came before the connection closed"
                             % (len(body), want))
    elif not closed:
        return None  # the body ends when the connection closes
    if body is None:
        return None
    return int(parts[1]), headers, body.decode("utf-8", "replace")


def dechunk(body, closed):
    """The body of a chunked answer; None while more may come. Raises NoDecision."""
    out = []
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size = body[pos:eol].split(b";")[0].strip()
        if not size or size.strip(b"0123456789abcdefABCDEF"):
            raise NoDecision("malformed chunked answer (chunk size %r)" % one_line(size.decode("latin-1"), 20))
        n = int(size, 16)
        pos = eol + 2
        if n == 0:
            while True:  # trailer lines, then the empty line that ends the answer
                eol = body.find(b"\r\n", pos)
                if eol < 0:
                    break
                if eol == pos:
                    if eol + 2 != len(body):
                        raise NoDecision("malformed chunked answer (bytes after its end)")
                    return b"".join(out)
                pos = eol + 2
            break
        if len(body) < pos + n + 2:
            break
        if body[pos + n:pos + n + 2] != b"\r\n":
            raise NoDecision("malformed chunked answer (a chunk longer than its size)")
        out.append(body[pos:pos + n])
        pos += n + 2
    if not closed:
        return None
    raise NoDecision("cut chunked answer: the connection closed before its last chunk")


def ask_service(conf, vmid, source, target_node, deadline, now):
    """-> answer dict with verdict allow|deny. Raises NoDecision."""
    target = parse_url(conf["url"])
    fields = ['"vmid":' + vmid, '"target":' + json_str(target_node), '"source":' + json_str(source),
              '"mode":' + json_str("warn" if conf["mode"] == "warn" else "enforce")]
    body = ("{" + ",".join(fields) + "}").encode("utf-8")
    delay = 0.1
    for attempt in (1, 2, 3):  # a refused connection or a 502/504 is tried again while time is left
        try:
            status, headers, text = http_post(conf, target, body, deadline, now)
            failed = None
        except Retryable as exc:
            failed = exc
        if (not failed and status not in (502, 504)) or attempt == 3 or deadline - now() <= delay + 0.05:
            break
        time.sleep(delay)
        delay *= 2
    if failed:
        raise NoDecision(str(failed)) from None
    ctype = headers.get("content-type", "")
    answer = parse_kv(text) if ctype.startswith("text/plain") else {}
    why = one_line(answer.get("line") or answer.get("reason") or answer.get("detail") or "", 300)
    if status in (401, 403):
        raise NoDecision("the service refused the token (HTTP %d); check token_file/token" % status)
    if status == 503 or answer.get("verdict") == "unknown":
        raise NoDecision("the service could not decide (HTTP %d%s)" % (status, ": " + why if why else ""))
    if status >= 500:
        raise NoDecision("the service failed (HTTP %d%s)" % (status, ": " + why if why else ""))
    if status != 200:
        why = why or one_line(text, 200)
        raise NoDecision("the service refused the request (HTTP %d%s)" % (status, ": " + why if why else ""))
    if not ctype.startswith("text/plain"):
        raise NoDecision("malformed answer: content type %r, expected text/plain key=value lines"
                         % (ctype or "none"))
    if not text.endswith(("\nend=1\n", "\nend=1")):  # the service's end line: nothing was cut off
        raise NoDecision("cut answer: no end line (%d bytes came without the service's final end=1)"
                         % len(text.encode("utf-8", "replace")))
    if answer.get("verdict") not in ("allow", "deny"):
        raise NoDecision("malformed answer: no verdict=allow or verdict=deny line")
    return answer


# --- the decision -------------------------------------------------------------------------------

def log_syslog(message, warning):
    try:
        import syslog
        syslog.openlog("migration-guard-hook", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING if warning else syslog.LOG_INFO, message)
    except Exception:  # logging must never change the outcome
        pass


def no_decision(conf, reason, vmid, source, target_node):
    log_syslog("vmid=%s source=%s target=%s verdict=none fail=%s reason=%s"
               % (vmid, source, target_node, conf["fail"], reason), True)
    block = conf["fail"] == "closed"
    say("%sno decision for the migration of VM %s from %s to %s: %s; %s"
        % ("" if block else "warning: ", vmid, source, target_node, reason,
           "blocking it (fail = closed)" if block else "allowing it (fail = open)"))
    return EXIT_NO_DECISION if block else EXIT_OK


def check_migration(vmid, source):
    now = time.monotonic
    start = now()
    conf, problems = load_config()
    target_node = conf["node"] or os.uname().nodename.split(".")[0]
    deadline = start + conf["timeout"]
    if problems:
        return no_decision(conf, "unusable config: " + "; ".join(problems), vmid, source, target_node)
    if conf["mode"] == "off":
        say("mode off: migration of VM %s not checked" % vmid)
        return EXIT_OK
    try:
        answer = ask_service(conf, vmid, source, target_node, deadline, now)
    except NoDecision as exc:
        return no_decision(conf, str(exc), vmid, source, target_node)
    verdict, code, decision = answer["verdict"], answer.get("code", ""), answer.get("decision", "")
    line = one_line(answer.get("line", ""))
    log_syslog("vmid=%s source=%s target=%s verdict=%s code=%s mode=%s decision=%s"
               % (vmid, source, target_node, verdict, code or "-", conf["mode"], decision or "-"),
               verdict == "deny")
    if verdict == "allow":
        say(line or "allowed migration of VM %s from %s to %s" % (vmid, source, target_node))
        return EXIT_OK
    if not line:
        line = "blocked migration of VM %s from %s to %s (%s)" % (vmid, source, target_node, code or "no reason given")
    if conf["mode"] == "warn":
        say("warn mode, not enforced: would have " + line)
        return EXIT_OK
    say(line)
    return int(answer["exit"]) if answer.get("exit") in ("1", "2", "3", "4") else EXIT_OTHER


def main(argv):
    if len(argv) == 2 and argv[1] in ("--help", "-h"):
        sys.stdout.write(HELP)
        return 0
    if len(argv) != 3:
        sys.stderr.write("usage: %s <vmid> <phase>   (or --help)\n" % os.path.basename(argv[0]))
        return EXIT_USAGE
    vmid, phase = argv[1], argv[2]
    rc = run_previous(vmid, phase)
    if rc != 0:
        if phase == "pre-start":
            say("previous hookscript of VM %s failed in pre-start (exit code %d); start stopped" % (vmid, rc))
        return rc
    if phase != "pre-start":
        return 0
    source = os.environ.get("PVE_MIGRATED_FROM", "")
    if not source:
        return 0  # an ordinary start (also of a VM left with lock: migrate): never asked, never blocked
    if not (vmid.isascii() and vmid.isdigit()):
        say("VMID %r is not a number; not checked" % vmid)
        return 0
    return check_migration(vmid, source)

