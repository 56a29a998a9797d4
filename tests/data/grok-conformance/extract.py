#!/usr/bin/env python3
"""Extracts the legacy-mode examples of logstash-patterns-core's spec/patterns/*_spec.rb.

Usage: extract.py <git dir of logstash-patterns-core> <out dir>

Reads only data out of the Ruby specs: the pattern under test, the message, and what the
legacy (non-ECS) branch expects: that it matches or not, flat `'field' => 'value'` captures,
and fields that must be absent. ECS-only expectations and nested or computed values are not
extracted (the count of those is printed). Writes one JSON-lines file per spec file.
"""
import json, os, re, subprocess, sys

SPECS = "aws bind core haproxy httpd java mongodb rails3 redis squid syslog".split()

def git_show(gitdir, path):
    return subprocess.run(["git", "--git-dir", gitdir, "show", "HEAD:" + path],
                          capture_output=True, text=True, check=True).stdout

STR = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""

def unquote(s):
    if s[0] == "'":
        return re.sub(r"\\([\\'])", r"\1", s[1:-1])
    if "#{" in s:
        return None
    out, i, body = [], 0, s[1:-1]
    esc = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "e": "\x1b", "r": "\r"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(esc.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)

def parse_hash(text, lets):
    """Flat `'k' => 'v'` pairs; returns (pairs, skipped)."""
    pairs, skipped = {}, 0
    i = 0
    while i < len(text):
        m = re.compile(r"\s*(" + STR + r")\s*=>\s*").match(text, i)
        if not m:
            break
        key = unquote(m.group(1))
        j = m.end()
        v = re.compile(STR).match(text, j)
        if v:
            pairs[key] = unquote(v.group(0))
            j = v.end()
        elif text.startswith("[", j):
            depth, k = 0, j
            while k < len(text):
                if text[k] == "[": depth += 1
                if text[k] == "]":
                    depth -= 1
                    if depth == 0: break
                k += 1
            items = [x.strip() for x in split_top(text[j + 1:k])]
            vals = []
            for it in items:
                if it == "message" and key == "message":
                    continue  # the event's original message, which grok appends to
                vm = re.fullmatch(STR, it)
                vals.append(unquote(vm.group(0)) if vm else None)
            if None in vals or not vals:
                skipped += 1
            else:
                pairs[key] = vals[0] if len(vals) == 1 else vals
            j = k + 1
        else:
            # nested hash, hash_including, number, nil: not a legacy capture we can compare
            depth, k = 0, j
            while k < len(text):
                ch = text[k]
                if ch in "{([": depth += 1
                elif ch in "})]": depth -= 1
                elif ch == "," and depth == 0: break
                k += 1
            skipped += 1
            j = k
        m2 = re.compile(r"\s*,\s*").match(text, j)
        i = m2.end() if m2 else len(text)
    return pairs, skipped

def split_top(s):
    parts, depth, cur, q = [], 0, "", None
    for ch in s:
        if q:
            cur += ch
            if ch == q and not cur.endswith("\\" + q): q = None
            continue
        if ch in "'\"": q = ch
        if ch in "[{(": depth += 1
        if ch in "]})": depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur); cur = ""
        else:
            cur += ch
    if cur.strip(): parts.append(cur)
    return parts

def balanced(text, start):
    """Index after the parenthesis closing the one at `start`."""
    depth, i, q = 0, start, None
    while i < len(text):
        ch = text[i]
        if q:
            if ch == "\\": i += 2; continue
            if ch == q: q = None
        elif ch in "'\"": q = ch
        elif ch == "(": depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0: return i + 1
        i += 1
    return len(text)

def extract(src, spec):
    lines = src.split("\n")
    # Blocks by indentation: (indent, kind, lets, subject, legacy)
    stack = [(-1, "top", {}, None, True)]
    examples, skipped = {}, 0
    ecs_if = []  # (indent, in_legacy_branch)
    i = 0
    def resolve(expr):
        expr = expr.strip()
        m = re.fullmatch(STR, expr)
        if m: return unquote(expr)
        for frame in reversed(stack):
            if expr in frame[2]: return frame[2][expr]
        if expr in ("subject", "grok", "grok_result"):
            for frame in reversed(stack):
                if frame[3] is not None: return frame[3]
        return None
    def example(pattern, message, exact):
        key = (pattern, message, exact)
        if key not in examples:
            examples[key] = {"pattern": pattern, "message": message, "exact": exact}
        return examples[key]
    while i < len(lines):
        line = lines[i]
        ind = len(line) - len(line.lstrip())
        s = re.sub(r"\s+#[^'\"]*$", "", line.strip())
        s = re.sub(r"^(should|is_expected\.to)\s+include", "expect(subject).to include", s)
        s = re.sub(r"^(should_not|is_expected\.not_to)\s+include", "expect(subject).not_to include", s)
        while len(stack) > 1 and s == "end" and ind == stack[-1][0]:
            stack.pop(); s = ""
        while ecs_if and ind <= ecs_if[-1][0] and s in ("end",):
            ecs_if.pop(); s = ""
        if ecs_if and ind == ecs_if[-1][0] and s == "else":
            ecs_if[-1] = (ecs_if[-1][0], True); i += 1; continue
        legacy = all(b for _, b in ecs_if)
        m = re.match(r"describe_pattern\s*\(?\s*(" + STR + r")\s*,\s*\[(.*?)\]", s)
        if m:
            modes = m.group(2)
            pat = unquote(m.group(1))
            ok = "legacy" in modes
            stack.append((ind, "describe", {"pattern": pat}, ("PATTERN", pat) if ok else None, ok))
            i += 1; continue
        m = re.match(r"(?:RSpec\.)?(describe|context)\s+(" + STR + r")", s)
        if m and s.endswith("do"):
            arg = unquote(m.group(2))
            subj = ("PATTERN", arg) if re.fullmatch(r"[A-Z0-9_]+", arg or "") else None
            inherit = stack[-1][4]
            if m.group(1) == "describe" and len(stack) == 1:
                stack.append((ind, "describe", {}, subj, True))
            else:
                stack.append((ind, "context", {}, subj if subj else None, inherit))
            i += 1; continue
        if re.match(r"x(it|context|describe)\b.*\bdo$", s):
            # Pending upstream: not an expectation Logstash meets.
            stack.append((ind, "it", {}, None, False)); i += 1; continue
        if re.match(r"it\b.*\bdo$", s) or re.match(r"(before|after)\b.*do$", s) or re.match(r".*\.each do\b", s):
            stack.append((ind, "it", {}, None, stack[-1][4])); i += 1; continue
        m = re.match(r"if\s+ecs_compatibility\?\s*$", s)
        if m: ecs_if.append((ind, False)); i += 1; continue
        m = re.match(r"(unless\s+ecs_compatibility\?|if\s+!\s*ecs_compatibility\?)\s*$", s)
        if m: ecs_if.append((ind, True)); i += 1; continue
        m = re.match(r"let\(:(\w+)\)\s*(\{|do)\s*(.*)$", s)
        if m:
            name, rest = m.group(1), m.group(3)
            if m.group(2) == "do" or not rest.rstrip().endswith("}"):
                body = rest
                while not re.match(r"\s*(end|\})\s*$", lines[i + 1]) and i + 1 < len(lines):
                    i += 1; body += "\n" + lines[i].strip()
                i += 1
                val = body.strip()
            else:
                val = rest.rstrip()[:-1].strip()
            v = resolve(val) if re.fullmatch(STR, val) else None
            # An unreadable value hides the outer one rather than letting it stand in.
            stack[-1][2][name] = v if isinstance(v, str) else None
            i += 1; continue
        m = re.match(r"(\w+)\s*=\s*(grok_match|grok_exact_match)[ (](.*?)\)?$", s)
        if m and stack[-1][4]:
            args = split_top(m.group(3))
            if len(args) in (2, 3):
                pat, msg = resolve(args[0]), resolve(args[1])
                if isinstance(pat, tuple): pat = pat[1]
                exact = m.group(2) == "grok_exact_match" or (len(args) == 3 and args[2].strip() == "true")
                if isinstance(pat, str) and isinstance(msg, str):
                    stack[-1][2][m.group(1)] = ("RESULT", pat, msg, exact)
            i += 1; continue
        m = re.match(r"(\w+)\s*=\s*(" + STR + r")$", s)
        if m and stack[-1][4]:
            v = unquote(m.group(2))
            if v is not None: stack[-1][2][m.group(1)] = v
            i += 1; continue
        if not stack[-1][4] or not legacy or not s.startswith("expect"):
            i += 1; continue
        # gather a full statement (balanced parentheses)
        stmt = s
        while stmt.count("(") > stmt.count(")") and i + 1 < len(lines):
            i += 1; stmt += " " + re.sub(r"\s+#[^'\"]*$", "", lines[i].strip())
        while stmt.count("(") > stmt.count(")") and i + 1 < len(lines):
            i += 1; stmt += " " + lines[i].strip()
        i += 1
        m = re.match(r"expect\((.*)", stmt)
        inner_end = balanced(stmt, len("expect"))
        target = stmt[len("expect("):inner_end - 1].strip()
        tail = stmt[inner_end:].strip()
        subj = None
        keys_of = False
        if target.endswith(".keys"):
            keys_of, target = True, target[:-5]
        if target.endswith("['tags']") and re.fullmatch(r"\.to\s+be_nil", tail):
            target, tail = target[:-len("['tags']")], ".to pass"
        gm = re.fullmatch(r"(grok_match|grok_exact_match)\((.*)\)", target)
        local = resolve(target) if re.fullmatch(r"\w+", target) and target not in ("grok", "subject", "grok_result") else None
        if isinstance(local, tuple) and local[0] == "RESULT":
            _, pat, msg, exact = local
        elif gm:
            args = split_top(gm.group(2))
            if len(args) not in (2, 3): skipped += 1; continue
            pat, msg = resolve(args[0]), resolve(args[1])
            if isinstance(pat, tuple): pat = pat[1]
            exact = gm.group(1) == "grok_exact_match" or (len(args) == 3 and args[2].strip() == "true")
        elif target in ("grok", "subject", "grok_result"):
            p = resolve("subject")
            pat = p[1] if isinstance(p, tuple) else None
            msg = resolve("message")
            exact = False
        else:
            skipped += 1; continue
        if not isinstance(pat, str) or not isinstance(msg, str):
            skipped += 1; continue
        ex = example(pat, msg, exact)
        if re.fullmatch(r"\.to\s+pass", tail):
            ex["matches"] = True
        elif re.fullmatch(r"\.(not_to|to_not)\s+pass", tail):
            ex["matches"] = False
        elif keys_of and (im := re.fullmatch(r"\.(not_to|to_not)\s+include\((.*)\)", tail)):
            for k in split_top(im.group(2)):
                k = k.strip()
                if re.fullmatch(STR, k):
                    ex.setdefault("absent", []).append(unquote(k))
                else:
                    skipped += 1
        elif not keys_of and (im := re.fullmatch(r"\.to\s+include\((.*)\)", tail, re.S)):
            pairs, sk = parse_hash(im.group(1), {})
            skipped += sk
            # The event's own `message` field, not a capture.
            if pairs.get("message") == msg:
                del pairs["message"]
            if pairs:
                ex["matches"] = True
                ex.setdefault("captures", {}).update(pairs)
        else:
            skipped += 1
    out = [e for e in examples.values() if "matches" in e or "absent" in e]
    return out, skipped

def main():
    gitdir, outdir = sys.argv[1], sys.argv[2]
    total = 0
    for spec in SPECS:
        src = git_show(gitdir, f"spec/patterns/{spec}_spec.rb")
        exs, skipped = extract(src, spec)
        with open(os.path.join(outdir, f"{spec}.jsonl"), "w") as f:
            for e in exs:
                f.write(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n")
        total += len(exs)
        print(f"{spec}: {len(exs)} examples, {skipped} expectations not extracted", file=sys.stderr)
    print(f"total: {total}", file=sys.stderr)

main()
