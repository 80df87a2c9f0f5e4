"""`residfs --help`, the man page (docs/residfs.1), docs/cli.md and the bash completion
(contrib/bash-completion/residfs) name the same commands, options and mount options;
the man page renders without warnings; `meson install` installs the binary, the man
page and the completion.

Options are taken from the texts with one regular expression (troff's `\\-` read as
`-`); the few options of other programs that the texts mention are in FOREIGN, each
with its reason. The -o names residfs takes are asked of the binary itself (an empty
value makes the parser say whether a name is one of its own), and the completion is
run in bash as readline would run it.
"""
import os
import re
import shlex
import shutil
import subprocess

import numpy as np
import pytest

import rfshelp as H
from conftest import _llama

MAN = os.path.join(H.REPO, "docs", "residfs.1")
CLI_MD = os.path.join(H.REPO, "docs", "cli.md")
COMPLETION = os.path.join(H.REPO, "contrib", "bash-completion", "residfs")

# Options of other programs that --help, the man page or cli.md mention.
FOREIGN = {
    "-u": "fusermount3 -u MOUNTPOINT, how a mount is unmounted",
    "-t": "mount -t fuse.residfs, mount(8)'s file system type",
    "-n": "ulimit -n, the limit of open files (cli.md)",
    "-Hn": "ulimit -Hn, its hard limit (cli.md)",
    "-sfnv": "mount(8)'s helper flags, as mount.residfs takes them",
    "-s": "mount(8)'s helper flag (sloppy), taken by mount.residfs",
    "-v": "mount(8)'s helper flag (verbose), taken by mount.residfs",
}
# residfs's own options that --help does not list (it is their output): checked below
# to exist by running them.
SELF = {"--help", "-h"}

LONG = re.compile(r"(?<![\w./\\-])--[a-z][a-z0-9-]*")
SHORT = re.compile(r"(?<![\w./\\-])-[A-Za-z]+(?![\w-])")
ENV = re.compile(r"\b(?:RESIDFS|HF|HUGGING_FACE|HUGGINGFACE|AWS|XDG|CURL|SSL)_[A-Z0-9_]*[A-Z0-9]")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def troff_text(src):
    """The words of a man(7) source: comments dropped, escapes undone, macros kept."""
    lines = [ln for ln in src.splitlines() if not ln.startswith(('.\\"', "'\\\""))]
    t = "\n".join(lines)
    t = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", t)      # font changes
    t = t.replace("\\-", "-").replace("\\(aq", "'").replace("\\(em", "--").replace("\\&", "")
    t = t.replace("\\e", "\\").replace("\\ ", " ")
    return t


def options(text):
    return set(LONG.findall(text)) | set(SHORT.findall(text))


def man_sections(src):
    """{SECTION NAME: its troff source} of the man page."""
    out, name = {}, None
    for ln in src.splitlines():
        m = re.match(r'\.SH\s+"?([^"]+?)"?\s*$', ln)
        if m:
            name = m.group(1)
            out[name] = ""
        elif name:
            out[name] += ln + "\n"
    return out


def man_subsections(section_src):
    out, name = {}, None
    for ln in section_src.splitlines():
        m = re.match(r'\.SS\s+"?([^"]+?)"?\s*$', ln)
        if m:
            name = m.group(1)
            out[name] = ""
        elif name:
            out[name] += ln + "\n"
    return out


def tp_tags(section_src):
    """The tag lines of the .TP items of a section (the line after each .TP)."""
    return [tag for tag, _ in tp_items(section_src)]


def tp_items(section_src):
    """(tag line, body) of each .TP item of a section."""
    items, lines = [], section_src.splitlines()
    for i, ln in enumerate(lines[:-1]):
        if ln.strip() != ".TP":
            continue
        body = []
        for b in lines[i + 2:]:
            if re.match(r"\.(TP|SS|SH|PP|P|LP)\b", b):
                break
            body.append(b)
        items.append((lines[i + 1], "\n".join(body)))
    return items


def flat(src):
    """Troff source as running text: macro names and quotes dropped, lines joined."""
    out = []
    for ln in troff_text(src).splitlines():
        if ln.startswith("."):
            ln = ln.split(None, 1)[1] if " " in ln else ""
            ln = ln.replace('"', "")
        out.append(ln)
    return re.sub(r"\s+", " ", " ".join(out))


@pytest.fixture(scope="module")
def help_text(binary):
    r = H.run(["--help"])
    assert r.returncode == 0 and r.stdout, r
    return r.stdout


@pytest.fixture(scope="module")
def help_opts(help_text):
    opts = options(help_text) - set(FOREIGN)
    # the parse found the options (not nothing, not prose)
    assert {"--dtype", "--base", "-o", "-f", "--foreground", "-d", "--debug", "--log-level",
            "--log-file", "--json", "--watch", "--interval", "--version"} <= opts, sorted(opts)
    return opts


@pytest.fixture(scope="module")
def help_commands(help_text):
    block = help_text.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0]
    cmds = [m.group(1) for m in re.finditer(r"^  ([a-z]+) ", block, re.M)]
    assert {"mount", "export", "inspect", "prefetch", "stats", "demo"} <= set(cmds), block
    return cmds


@pytest.fixture(scope="module")
def help_groups(help_text, help_commands):
    """{command: the options --help lists in the groups that name it}."""
    groups, cmds = {c: set() for c in help_commands}, []
    for ln in help_text.splitlines():
        if ln and not ln.startswith(" ") and ln.endswith(":"):
            cmds = [c for c in re.findall(r"[a-z]+", ln) if c in groups]
        elif ln.startswith("  -"):
            for c in cmds:
                groups[c] |= options(re.split(r"\s{2,}", ln.strip())[0])
    assert groups["mount"] and groups["stats"] and groups["demo"], groups
    return groups


@pytest.fixture(scope="module")
def man_src():
    return read(MAN)


@pytest.fixture(scope="module")
def man(man_src):
    return troff_text(man_src)


@pytest.fixture(scope="module")
def cli_md():
    return read(CLI_MD)


# ---- (a) --help, the man page and docs/cli.md ----------------------------------------

def test_foreign_allow_list_is_used(help_text, man, cli_md):
    """Every entry of FOREIGN is still needed (the list stays small)."""
    found = options(help_text) | options(man) | options(cli_md)
    assert set(FOREIGN) <= found, sorted(set(FOREIGN) - found)


def test_help_options_are_documented(help_opts, man, cli_md):
    assert help_opts - options(man) == set(), "in --help, not in docs/residfs.1"
    assert help_opts - options(cli_md) == set(), "in --help, not in docs/cli.md"


def test_documented_options_exist(help_opts, man, cli_md, help_text):
    known = help_opts | SELF
    assert options(man) - set(FOREIGN) - known == set(), "in docs/residfs.1, not in --help"
    assert options(cli_md) - set(FOREIGN) - known == set(), "in docs/cli.md, not in --help"
    for opt in SELF:
        r = H.run([opt])
        assert r.returncode == 0 and r.stdout == help_text, r


def test_man_describes_every_option(help_opts, man_src):
    """Each option of --help has an item (.TP) of its own in the man page."""
    tags = set()
    for sec in man_sections(man_src).values():
        for t in tp_tags(sec):
            tags |= options(troff_text(t))
    assert help_opts - tags == set()


def test_option_values_match(help_text, man_src):
    """The values --help gives for --dtype, --rounding, --backend and --log-level are
    named by the man page's item for the option."""
    items = {}
    for name, sec in man_sections(man_src).items():
        if name != "OPTIONS":
            continue
        for tag, body in tp_items(sec):
            for o in LONG.findall(troff_text(tag)):
                items[o] = flat(tag + "\n" + body)
    for opt, vals in help_values(help_text).items():
        for v in vals:
            assert re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", items[opt]), (opt, v, items[opt])


def help_values(help_text):
    out = {}
    for opt in ("--dtype", "--rounding", "--backend"):
        m = re.search(rf"^  {opt} ([\w|-]+)", help_text, re.M)
        assert m, opt
        out[opt] = m.group(1).split("|")
    m = re.search(r"^  --log-level LEVEL\s+(.*)$", help_text, re.M)
    assert m
    out["--log-level"] = re.findall(r"\b(error|warning|info|debug)\b", m.group(1))
    assert len(out["--log-level"]) == 4, m.group(0)
    return out


def test_commands_everywhere(help_commands, man_src, man, cli_md):
    secs = man_sections(man_src)
    items = {troff_text(t).split()[1] for t in tp_tags(secs["COMMANDS"]) if t.startswith(".B ")}
    assert items == set(help_commands), "the man page's COMMANDS are not those of --help"
    synopsis = flat(secs["SYNOPSIS"])
    for c in help_commands:
        assert re.search(rf"residfs {c}\b", synopsis), f"{c} not in the man page's SYNOPSIS"
        assert re.search(rf"residfs {c}\b", cli_md), f"{c} not in docs/cli.md"
    # the helper form of mount.fuse3
    assert re.search(r"\bresidfs SPEC MOUNTPOINT \[ ?-o OPTS ?\]", synopsis), synopsis
    assert "residfs SPEC MOUNTPOINT" in cli_md


def test_man_sections():
    secs = man_sections(read(MAN))
    want = ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "SPEC", "OPTIONS", "MOUNT OPTIONS",
            "FSTAB AND SYSTEMD", "FILES", "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "SEE ALSO"]
    assert [s for s in secs if s in want] == want, list(secs)
    see = troff_text(secs["SEE ALSO"])
    for ref in ("mount.fuse3 (8)", "fusermount3 (1)", "fstab (5)", "systemd.mount (5)",
                "docs/systemd.md"):
        assert ref.replace(" ", "") in see.replace(" ", ""), ref
    files = troff_text(secs["FILES"])
    assert ".residfs-stats" in files and "residfs/blocks" in files


def test_version_of_man_page(binary, man_src):
    r = H.run(["--version"])
    assert r.returncode == 0, r
    version = r.stdout.splitlines()[0]                # "residfs X.Y.Z"
    th = re.search(r'^\.TH\s+RESIDFS\s+1\s+"[^"]*"\s+"([^"]*)"', man_src, re.M)
    assert th and th.group(1) == version, (th and th.group(0), version)


def test_environment(help_text, cli_md, man_src):
    """Every variable --help and docs/cli.md name is in the man page's ENVIRONMENT."""
    env = troff_text(man_sections(man_src)["ENVIRONMENT"])
    named = set(ENV.findall(help_text)) | set(ENV.findall(cli_md))
    assert "RESIDFS_BACKEND" in named and "AWS_PROFILE" in named, named
    assert named - set(ENV.findall(env)) == set()


def test_links_to_systemd_md(cli_md):
    assert "(systemd.md)" in cli_md
    assert os.path.isfile(os.path.join(H.REPO, "docs", "systemd.md"))


def _o_kind(name, tmp_path):
    """How `-o NAME=` (an empty value) is taken: 'residfs' (one of residfs's options: it
    needs a value or takes none), 'unknown', or 'accepted' (passed on or ignored)."""
    r = H.run(["mount", "-o", f"{name}=", os.path.join(str(tmp_path), "no-such-spec"),
               os.path.join(str(tmp_path), "no-such-mp")], env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r
    if "unknown mount option" in r.stderr:
        return "unknown"
    if "needs a value" in r.stderr or "takes no value" in r.stderr:
        return "residfs"
    return "accepted"


@pytest.fixture(scope="module")
def o_names(help_opts, tmp_path_factory):
    """The long options -o takes as NAME=VALUE (with '_'), asked of the binary."""
    tmp = tmp_path_factory.mktemp("o-names")
    names = set()
    for opt in sorted(o for o in help_opts if o.startswith("--")):
        name = opt[2:].replace("-", "_")
        if _o_kind(name, tmp) == "residfs":
            names.add(name)
    assert {"cache_size", "log_level", "log_file", "backend"} <= names, names
    return names


def test_o_names_in_mount_options(o_names, man_src, cli_md):
    sec = man_sections(man_src)["MOUNT OPTIONS"]
    sub = man_subsections(sec)["residfs options"]
    documented = {re.match(r"[a-z_]+", troff_text(t).split()[1]).group(0) for t in tp_tags(sub)}
    assert documented == o_names
    for n in o_names:
        assert f"`{n}`" in cli_md, f"-o {n} not in docs/cli.md"


def test_other_mount_options_documented_and_accepted(man_src, cli_md, tmp_path):
    """The FUSE options and the generic ones that the man page and cli.md list are taken
    by the parser, and a name it does not know is refused pointing at MOUNT OPTIONS."""
    sec = troff_text(man_sections(man_src)["MOUNT OPTIONS"])
    fuse = ["allow_other", "default_permissions", "auto_unmount", "fsname", "uid", "gid",
            "umask", "nosuid", "nodev", "noexec", "noatime"]
    generic = ["defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users",
               "owner", "group", "rw", "ro", "nobootwait", "x-", "comment="]
    for n in fuse + generic:
        assert re.search(rf"(?<![\w-]){re.escape(n)}", sec), f"{n} not in MOUNT OPTIONS"
        assert f"`{n}" in cli_md, f"{n} not in docs/cli.md"
    for n in fuse + generic[:-2] + ["x-systemd.automount", "comment=systemd.foo"]:
        r = H.run(["mount", "-o", n, os.path.join(str(tmp_path), "no-such-spec"),
                   os.path.join(str(tmp_path), "no-such-mp")], env={"HF_HUB_OFFLINE": "1"})
        assert "unknown mount option" not in r.stderr, r
    r = H.run(["mount", "-o", "frobnicate", "x", "y"])
    assert r.returncode == 2 and "-o frobnicate" in r.stderr, r
    assert "residfs(1), MOUNT OPTIONS" in r.stderr, r
    assert '.SH "MOUNT OPTIONS"' in man_src


def test_man_page_renders_without_warnings():
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-ww", "-z", MAN], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    if shutil.which("man"):
        r = subprocess.run(["man", "--warnings", "-l", MAN], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, MANPAGER="cat", PAGER="cat",
                                                MANWIDTH="80"))
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "MOUNT OPTIONS" in r.stdout
    if not shutil.which("groff") and not shutil.which("man"):
        pytest.skip("neither groff nor man is installed")


# ---- (b) the bash completion ---------------------------------------------------------

def bash_words(line):
    """COMP_WORDS as bash makes them: split at white space (not one after a backslash)
    and at the word breaks '=' and ':' (each its own word); an empty word after
    trailing white space."""
    words = []
    for tok in re.findall(r"(?:\\.|[^\s\\])+", line):
        words += [w for w in re.split(r"([=:])", tok) if w]
    if not line or line[-1].isspace():
        words.append("")
    return words


def complete(line, cwd=None):
    """COMPREPLY of the completion function of residfs for @line (cursor at its end)."""
    if not shutil.which("bash"):
        pytest.skip("no bash")
    words = bash_words(line)
    script = f"""
source {shlex.quote(COMPLETION)} || exit 3
spec=$(complete -p residfs) || exit 4
fn=${{spec#*-F }}; fn=${{fn%% *}}
COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMPREPLY=()
"$fn" residfs "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}" || exit 5
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                       text=True, timeout=30, cwd=cwd)
    assert r.returncode == 0, (line, r.returncode, r.stderr)
    return [w for w in r.stdout.split("\n") if w]


def test_completion_commands(help_commands):
    assert sorted(complete("residfs ")) == sorted(help_commands)
    assert complete("residfs st") == ["stats"]
    assert sorted(complete("residfs --")) == ["--help", "--version"]


def test_completion_values(help_text):
    for opt, vals in help_values(help_text).items():
        assert sorted(complete(f"residfs mount {opt} ")) == sorted(vals), opt
    assert complete("residfs inspect --dtype b") == ["bf16"]
    # --opt=VALUE: bash replaces only what follows the '='
    assert sorted(complete("residfs export --dtype=f")) == ["fp16", "fp32"]
    assert sorted(complete("residfs export --rounding=")) == ["cast-first", "single"]


def test_completion_options():
    assert complete("residfs mount --ca") == ["--cache-size"]
    assert complete("residfs mount --log-l") == ["--log-level"]
    assert complete("residfs stats --w") == ["--watch"]
    # only the options of the command
    assert complete("residfs inspect --ca") == []
    assert sorted(complete("residfs demo --")) == ["--dir", "--help", "--keep", "--log-file",
                                                   "--log-level"]
    assert complete("residfs export --conf") == ["--config"]
    assert complete("residfs prefetch --conf") == []
    # the helper form completes as mount
    assert complete("residfs ./base+./res /mnt/m --ca") == ["--cache-size"]


def test_completion_o_lists(o_names):
    assert complete("residfs mount -o cache_") == ["cache_size="]
    assert complete("residfs mount -o allow_other,cache_") == ["allow_other,cache_size="]
    # after a '=' bash replaces only the rest of the word
    assert complete("residfs mount -o cache_size=1G,remote_m") == ["1G,remote_memory="]
    assert sorted(complete("residfs mount -o backend=")) == ["auto", "cpu", "cuda"]
    assert complete("residfs mount x y -o log_level=d") == ["debug"]
    offered = complete("residfs mount -o ")
    for n in o_names:
        assert n + "=" in offered or n in offered, n
    assert "allow_other" in offered and "fsname=" in offered


def test_completion_offers_what_the_parser_takes(help_opts, help_commands, help_groups,
                                                 tmp_path):
    """Every option --help lists is offered for some command; each command is offered
    the options of the groups of --help that name it, and nothing --help does not know;
    every -o name offered is taken by the parser."""
    offered = set(complete("residfs --"))
    for c in help_commands:
        mine = set(complete(f"residfs {c} -")) | set(complete(f"residfs {c} --"))
        assert mine - help_opts - SELF == set(), c
        # --backend: --help says merges are computed by mount and export only
        want = help_groups[c] - ({"--backend"} if c == "inspect" else set())
        assert want - mine == set(), c
        offered |= mine
    assert help_opts - offered == set()
    for item in complete("residfs mount -o "):
        assert _o_kind(item.rstrip("="), tmp_path) != "unknown", item


def test_completion_directories(tmp_path):
    root = str(tmp_path)
    for d in ("base", "residuals", "res-two"):
        os.mkdir(os.path.join(root, d))
    open(os.path.join(root, "notes.txt"), "w").close()
    assert complete("residfs mount ba", cwd=root) == ["base/"]
    assert sorted(complete("residfs mount base+re", cwd=root)) == ["base+res-two/",
                                                                    "base+residuals/"]
    assert complete("residfs mount base+0.5*resi", cwd=root) == ["base+0.5*residuals/"]
    assert complete("residfs export base+residuals res-", cwd=root) == ["res-two/"]
    assert complete("residfs demo --dir ba", cwd=root) == ["base/"]
    assert complete("residfs mount --remote-cache-dir=ba", cwd=root) == ["base/"]
    assert complete("residfs mount --log-file no", cwd=root) == ["notes.txt"]
    assert complete("residfs mount -o log_file=no", cwd=root) == ["notes.txt"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny"))
    rng = np.random.default_rng(7)
    V, Hd, I, L, KV = 64, 16, 32, 1, 16
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"))
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    res = H.write_residuals(os.path.join(root, "res"), d, vocab=V)
    return f"{base.path}+{res.path}"


def test_completion_stats_mountpoints(mounter, tiny, tmp_path):
    """stats completes the residfs mountpoints of /proc/mounts, and directories when none
    matches."""
    mp = os.path.join(str(tmp_path), "mnt with space")
    mounter.mount(tiny, mp=mp)
    real = os.path.realpath(mp)
    assert complete(f"residfs stats {real[:real.rindex('mnt with') + 3]}") == [real]
    # as typed with a backslash before the space
    assert complete("residfs stats " + real[:real.rindex(" space")].replace(" ", "\\ ")) == [real]
    assert real in complete("residfs stats ")
    os.mkdir(os.path.join(str(tmp_path), "plain-dir"))
    assert complete(f"residfs stats {os.path.join(str(tmp_path), 'plain')}") == \
        [os.path.join(str(tmp_path), "plain-dir") + "/"]


# ---- (c) meson install ---------------------------------------------------------------

def test_meson_install(binary, tmp_path):
    """meson install of the binary's build directory puts bin/residfs, man1/residfs.1 and
    the bash completion under DESTDIR."""
    exe = os.path.realpath(binary)
    build = os.path.dirname(os.path.dirname(exe))
    if os.path.basename(os.path.dirname(exe)) != "fs" or \
            not os.path.isdir(os.path.join(build, "meson-private")):
        pytest.skip(f"{binary} is not in a meson build directory")
    meson = shutil.which("meson")
    assert meson, "meson is not on PATH"
    dest = str(tmp_path / "dest")
    r = subprocess.run([meson, "install", "-C", build, "--destdir", dest, "--no-rebuild"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    found = {}
    for d, _, files in os.walk(dest):
        for f in files:
            p = os.path.join(d, f)
            found[os.path.relpath(p, dest)] = p
    def one(suffix):
        hits = [p for rel, p in found.items() if rel.endswith(suffix)]
        assert len(hits) == 1, (suffix, sorted(found))
        return hits[0]
    exe_i = one("bin/residfs")
    assert os.access(exe_i, os.X_OK)
    v = subprocess.run([exe_i, "--version"], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0 and v.stdout.split("\n")[0] == H.run(["--version"]).stdout.split("\n")[0]
    assert read(one("share/man/man1/residfs.1")) == read(MAN)
    assert read(one("bash-completion/completions/residfs")) == read(COMPLETION)
