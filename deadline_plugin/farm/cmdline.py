"""Split a plugin's argument string the way Deadline does on every platform.

Deadline hands RenderArgument to .NET, which splits it with Windows command-line rules
(CommandLineToArgvW): the plugin quotes with those rules, so the farm must split with them too
(a POSIX shlex split halves runs of backslashes inside quotes).
"""
from __future__ import annotations


def split_windows(line: str) -> list[str]:
    """Deadline's split of an argument string: .NET's ParseArgumentsIntoList (CommandLineToArgvW rules)."""
    args, i, n = [], 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return args
        buf, quoted = [], False
        while i < n:
            c = line[i]
            if c == "\\":
                j = i
                while j < n and line[j] == "\\":
                    j += 1
                if j < n and line[j] == '"':
                    buf.append("\\" * ((j - i) // 2))
                    if (j - i) % 2:
                        buf.append('"')
                        j += 1
                else:
                    buf.append("\\" * (j - i))
                i = j
                continue
            if c == '"':
                if quoted and i + 1 < n and line[i + 1] == '"':
                    buf.append('"')
                    i += 2
                    continue
                quoted = not quoted
                i += 1
                continue
            if not quoted and c in " \t":
                break
            buf.append(c)
            i += 1
        args.append("".join(buf))
