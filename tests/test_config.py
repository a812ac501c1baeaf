"""launcher.cvmfs.config and launcher.mountconf: cvmfs configuration as the real client
and the reference mountrepo read it (spec cvmfs-client-configuration.md sections 2-3)."""
import os
import resource
import subprocess

import pytest

from conftest import ROOT, python_oldest_and_newest
from launcher.cvmfs import config as C
from launcher import mountconf
from launcher.errors import CvmfsexecError


def write(path, text):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_shell_semantics_match_the_real_client(tmp_path):
    # each expectation below was observed with the real cvmfs2 2.12 -o parse (spec 2.3)
    (tmp_path / "globme").write_text("")
    p = write(tmp_path / "a.conf", "\n".join([
        "export X=7   # comment",
        "readonly Y=3",
        'S="a    b"',
        "GLOB=globm*",
        "T='a\\tb'",
        "if [ no = yes ]; then",
        "  Z=1",
        "fi",
        "if [ no = yes ]; then N=1; fi",
        "P='p1;p2'",
        "D=${UNSET_VAR:-dflt}$X",
        "A=1", "A=$((A+1))",
        ""]))
    v = C.parse_file(p, {})
    assert v["X"] == "7" and v["Y"] == "3"
    assert v["S"] == "a b"
    assert v["GLOB"] == "globme"          # globbing happens in the file's directory
    assert v["T"] == "a\tb"               # dash's echo interprets the escape
    assert v["Z"] == "" and "N" not in v
    assert v["P"] == "p1;p2" and v["D"] == "dflt7" and v["A"] == "2"


def test_earlier_values_are_visible_and_files_may_exit(tmp_path):
    a = write(tmp_path / "a.conf", "BASE_URL=http://s1\n")
    b = write(tmp_path / "b.conf", 'CVMFS_SERVER_URL="$BASE_URL/cvmfs/@fqrn@"\nexit 3\nLATE=x\n')
    v = C.parse_file(b, C.parse_file(a, {}), fqrn="atlas.cern.ch")
    assert v["CVMFS_SERVER_URL"] == "http://s1/cvmfs/atlas.cern.ch"
    assert v["LATE"] == ""                # discovered name, never assigned
    assert C.parse_file(str(tmp_path / "missing.conf"), {"K": "1"}) == {"K": "1"}


def test_simple_parser_and_templates(tmp_path):
    p = write(tmp_path / "s.conf", 'S="a    b"\nU=$CVMFS_TIMEOUT\nQ=\'x\'\nW=@fqrn@-@org@-@domain@-@\n')
    v = C.parse_file(p, {}, simple=True, fqrn="bench.example.org")
    assert v == {"S": "a    b", "U": "$CVMFS_TIMEOUT", "Q": "x",
                 "W": "bench.example.org-bench-@domain@-@"}


def test_shell_error_names_the_file(tmp_path):
    p = write(tmp_path / "bad.conf", "X=1\nif then fi (\n")
    with pytest.raises(CvmfsexecError) as e:
        C.parse_file(p, {})
    assert "bad.conf" in str(e.value)


def test_relocation_like_the_reference_sed():
    d = "/var/tmp/dist"
    assert C.relocate_line("CVMFS_KEYS_DIR=/etc/cvmfs/keys", d) == \
        "CVMFS_KEYS_DIR=/var/tmp/dist/etc/cvmfs/keys"
    # one pass: a dist under /var is not relocated twice
    assert C.relocate_line("CVMFS_CACHE_BASE=/var/lib/cvmfs", d) == \
        "CVMFS_CACHE_BASE=/var/tmp/dist/var/lib/cvmfs"
    assert C.relocate_line('M="/cvmfs"', d) == 'M="/var/tmp/dist/cvmfs"'
    for same in ("CVMFS_SERVER_URL=http://h/cvmfs/@fqrn@", "X=/usr/etc", "X=/etcetera",
                 "OASIS_CERTIFICATES=/cvmfs/oasis.opensciencegrid.org/mis/certificates"):
        assert C.relocate_line(same, d) == same


def make_dist(tmp_path, config_repo=None):
    dist = str(tmp_path / "dist")
    etc = os.path.join(dist, "etc", "cvmfs")
    write(os.path.join(etc, "default.conf"),
          "CVMFS_CACHE_BASE=/var/lib/cvmfs\nCVMFS_KEYS_DIR=/etc/cvmfs/keys\nORDER=default\n"
          "CVMFS_HTTP_PROXY=DIRECT\n")
    write(os.path.join(etc, "default.d", "10-a.conf"), "ORDER=$ORDER,10\n")
    write(os.path.join(etc, "default.d", "50-b.conf"),
          "ORDER=$ORDER,50\n" + ("CVMFS_CONFIG_REPOSITORY=%s\n" % config_repo
                                 if config_repo else ""))
    write(os.path.join(etc, "default.d", "README"), "ORDER=not-a-conf\n")
    write(os.path.join(etc, "default.local"),
          "ORDER=$ORDER,local\nCVMFS_CONFIG_REPOSITORY=hijacked\n. ./site.sh\n"
          "FQ=$CVMFS_FQRN\n")
    write(os.path.join(etc, "site.sh"), "SITE=/etc/site\n")
    write(os.path.join(etc, "domain.d", "example.org.conf"), "ORDER=$ORDER,domain\n")
    write(os.path.join(etc, "domain.d", "example.org.local"), "ORDER=$ORDER,domainlocal\n")
    write(os.path.join(etc, "config.d", "r.example.org.conf"), "ORDER=$ORDER,repo\n")
    write(os.path.join(etc, "config.d", "r.example.org.local"), "ORDER=$ORDER,repolocal\n")
    if config_repo:
        crepo = os.path.join(dist, "cvmfs", config_repo, "etc", "cvmfs")
        write(os.path.join(crepo, "default.conf"), "ORDER=$ORDER,cdefault\n")
        write(os.path.join(crepo, "domain.d", "example.org.conf"), "ORDER=$ORDER,cdomain\n")
        write(os.path.join(crepo, "config.d", "r.example.org.conf"),
              "ORDER=$ORDER,crepo\nCVMFS_SERVER_URL=http://s/cvmfs/@fqrn@\n")
    return dist


def test_search_order_relocation_and_frozen_config_repository(tmp_path):
    dist = make_dist(tmp_path, "cfg.example.org")
    v = C.load_repository_config("r.example.org", dist)
    assert v["ORDER"] == ("default,10,50,cdefault,local,cdomain,domain,domainlocal,crepo,"
                          "repo,repolocal")
    assert v["CVMFS_CONFIG_REPOSITORY"] == "cfg.example.org"
    assert v["CVMFS_CACHE_BASE"] == dist + "/var/lib/cvmfs"
    assert v["CVMFS_KEYS_DIR"] == dist + "/etc/cvmfs/keys"
    assert v["SITE"] == dist + "/etc/site"          # sourced file inlined and relocated
    assert v["FQ"] == "r.example.org"
    assert v["CVMFS_SERVER_URL"] == "http://s/cvmfs/r.example.org"
    assert C.config_repository(dist) == "cfg.example.org"
    # the config repository itself does not read its own files
    v = C.load_repository_config("cfg.example.org", dist)
    assert "cdefault" not in v["ORDER"]


def test_no_config_repository(tmp_path):
    dist = make_dist(tmp_path)
    v = C.load_repository_config("r.example.org", dist)
    assert v["ORDER"] == "default,10,50,local,domain,domainlocal,repo,repolocal"
    assert "CVMFS_CONFIG_REPOSITORY" not in v
    assert C.config_repository(dist) is None


def test_flat_file_round_trips_through_both_parsers(tmp_path):
    cfg = {"CVMFS_SERVER_URL": "http://a/cvmfs/x;http://b/cvmfs/x", "E": "", "Q": "it's",
           "P": "/x/y:/z", "SP": "a b"}
    path = C.write_flat(cfg, str(tmp_path / "flat.conf"))
    assert C.parse_file(path, {}) == cfg
    simple = C.parse_file(path, {}, simple=True)
    assert {k: simple[k] for k in cfg if k != "Q"} == {k: cfg[k] for k in cfg if k != "Q"}


def test_mountconf_defaults_where_the_reference_puts_them(tmp_path, monkeypatch):
    base = str(tmp_path)
    dist = make_dist(tmp_path)
    os.remove(os.path.join(dist, "etc", "cvmfs", "default.conf"))
    write(os.path.join(dist, "etc", "cvmfs", "config.d", "r.example.org.local"),
          "CVMFS_DEBUGLOG=/tmp/dbg\n")
    cfg = mountconf.assemble("r.example.org", base)
    assert cfg["CVMFS_NFILES"] == str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    assert cfg["CVMFS_USYSLOG"] == os.path.join(base, "log", "r.example.org.log")
    assert cfg["CVMFS_CACHE_BASE"] == os.path.join(dist, "var", "lib", "cvmfs")
    assert cfg["CVMFS_HTTP_PROXY"] == "auto;DIRECT"
    assert mountconf.debug_enabled(cfg)
    # default.local wins for NFILES/USYSLOG, as in the reference's grep
    with open(os.path.join(dist, "etc", "cvmfs", "default.local"), "a") as f:
        f.write("CVMFS_NFILES=4096\nCVMFS_USYSLOG=/var/log/x.log\nCVMFS_HTTP_PROXY=DIRECT\n")
    cfg = mountconf.assemble("r.example.org", base)
    assert cfg["CVMFS_NFILES"] == "4096"
    assert cfg["CVMFS_USYSLOG"] == dist + "/var/log/x.log"
    assert cfg["CVMFS_HTTP_PROXY"] == "DIRECT"
    env = mountconf.client_environ({"XDG_RUNTIME_DIR": "/run/user/7"}, uid=7)
    assert env["BEARER_TOKEN_FILE"] == "/run/user/7/bt_u7"
    assert mountconf.client_environ({"BEARER_TOKEN_FILE": "/t"}, uid=7)["BEARER_TOKEN_FILE"] \
        == "/t"


@pytest.mark.parametrize("name", ["a/b", "..", "../etc", "", "-x", "a b", "a;b"])
def test_invalid_repository_names(name):
    with pytest.raises(CvmfsexecError):
        mountconf.check_repo_name(name)


def test_dist_for_another_machine_type(tmp_path):
    dist = make_dist(tmp_path)
    write(os.path.join(dist, ".cvmfsexecdist"), "machtype: rhel9-s390x\n")
    with pytest.raises(CvmfsexecError) as e:
        mountconf.check_dist(str(tmp_path))
    assert "rhel9-s390x" in e.value.message


@pytest.mark.parametrize("python", python_oldest_and_newest())
def test_parser_runs_on_old_and_new_python(tmp_path, python):
    dist = make_dist(tmp_path, "cfg.example.org")
    code = ("import sys; sys.path.insert(0, %r); from launcher.cvmfs import config as C; "
            "print(C.load_repository_config('r.example.org', %r)['ORDER'])" % (ROOT, dist))
    out = subprocess.check_output([python, "-c", code], universal_newlines=True)
    assert out.strip().endswith("crepo,repo,repolocal")
