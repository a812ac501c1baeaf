# cvmfsexec (Python). The two commands a new machine needs: `make test` and `make demo`.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
APT_PACKAGES := rpm createrepo-c fuse3 squid squashfuse squashfs-tools attr
PYTEST_ARGS ?=

.PHONY: test demo bench deps venv dist artifact clean

# Debian packages the tests use (real rpmbuild, createrepo_c, fusermount3, squid...).
# Installed only when missing and when we are root; otherwise the tests that need
# them skip and say why.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null || exit 1; \
	  else echo "warning: missing Debian packages:$$missing (tests that need them will skip)"; fi; \
	fi

$(VPY): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $(VPY)

venv: $(VPY)

# make dist FLAVOUR=osg MAKEDIST_ARGS="-m rhel9-x86_64 -f"   (see docs/build.md)
FLAVOUR ?= osg
dist: venv
	$(VPY) build.py $(MAKEDIST_ARGS) $(FLAVOUR)

# make artifact: ./cvmfsexec from dist/ (see docs/artifact.md; `build.py -s -o singcvmfs` for singcvmfs)
artifact: venv
	$(VPY) build.py -o cvmfsexec

test: deps venv
	$(VPY) -m pytest -n 2 $(PYTEST_ARGS)

demo: deps venv
	$(VPY) -m builder.demo

bench: deps venv
	$(VPY) bench/run.py $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache dist .cvmfsexec .singcvmfs demo-work
