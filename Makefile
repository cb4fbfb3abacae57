# Set-up and everyday commands. Every target installs what it needs on a fresh Debian machine.
# Debian's interpreter, whose headers and venv module DEMO_PACKAGES installs (a python3 found
# earlier on PATH, such as a pyenv build, may lack Debian's optimised build: on this project's
# bench machine that costs a fifth more CPU per request).
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages, by what needs them. The demo: Apache, and a compiler with Python's headers for
# the C multipart parser.
DEMO_PACKAGES := apache2 gcc python3-dev python3-venv
# The tests, besides: apxs (the connector module), libfcgi's client, wrk (load), docker-compose
# (checks the files in docker/), clang and compiler-rt (libFuzzer harnesses: libclang-rt-dev holds
# the fuzzer and sanitizer runtimes, only recommended by clang), nginx and lighttpd (the other web
# servers in front of the backend), curl, openssl, chromium and ApacheBench (clients of the HTTP flavour),
# postgresql (the session store, started in a temporary folder), systemd and logrotate (check the
# files in service/), graphviz (the pictures in docs/ match their sources).
TEST_PACKAGES := $(DEMO_PACKAGES) apache2-dev libfcgi-bin wrk docker-compose clang libclang-rt-dev nginx lighttpd curl openssl \
	chromium apache2-utils postgresql systemd logrotate graphviz
# The benchmarks' peers, besides: php-fpm, libfcgi's headers (the C responder), uWSGI and its
# Python 3 plugin (its FastCGI mode); perf and strace for bench/profile_bench.py.
BENCH_PACKAGES := $(TEST_PACKAGES) libfcgi-dev php-fpm uwsgi-core uwsgi-plugin-python3 linux-perf strace

.PHONY: all test test-docker demo bench system-deps demo-deps bench-deps venv runtime clean connector install-connector fuzz fuzz-build docs

all: test

# The package itself (what the demo needs), then the test tools on top.
$(VENV)/.runtime: setup.py pyproject.toml $(addprefix connector_c/,multipart.c multipart.h upload.c upload.h direct_writer.c direct_writer.h fcgi_stdin.c fcgi_stdin.h fcgi_request.c fcgi_request.h fcgi_answer.c fcgi_answer.h fcgi_wire.c fcgi_wire.h build_multipart.py)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

runtime: $(VENV)/.runtime
venv: $(VENV)/.installed

demo-deps:
	@tools/install-system-deps $(DEMO_PACKAGES)

system-deps:
	@tools/install-system-deps $(TEST_PACKAGES)

bench-deps:
	@tools/install-system-deps $(BENCH_PACKAGES)

# The Apache connector module, built with Debian's apxs into build/ (LoadModule it from there, or
# `make install-connector` to put it in Apache's modules folder).
CONNECTOR := build/connector/.libs/mod_fcgi_backend.so
CONNECTOR_SOURCES := connector_c/mod_fcgi_backend.c connector_c/fcgi_wire.c connector_c/fcgi_wire.h
$(CONNECTOR): $(CONNECTOR_SOURCES)
	mkdir -p build/connector
	cp $(CONNECTOR_SOURCES) build/connector/
	cd build/connector && apxs -c -Wc,-O2 -Wc,-Wall -Wc,-Wextra -Wc,-Wno-unused-parameter mod_fcgi_backend.c fcgi_wire.c >build.log 2>&1 \
		|| (cat build.log; exit 1)
	@grep -i "warning" build/connector/build.log || true

connector: system-deps $(CONNECTOR)

install-connector: connector
	apxs -i -n fcgi_backend $(CONNECTOR)

# The protocol suites run a second time with every request taken record by record (the reference
# path), as they run otherwise through the C scanner of whole requests.
PROTOCOL_TESTS := tests/test_protocol.py tests/test_protocol_strict.py tests/test_x_stdin.py tests/test_webservers.py
test: system-deps venv connector fuzz-build
	$(PY) -m pytest tests
	FCGI_BACKEND_RECORD_BY_RECORD=1 $(PY) -m pytest -q $(PROTOCOL_TESTS)

# The docker-compose stack built and run for real (a few minutes: base images by mmdebstrap, then
# the stack's images); starts a Docker engine when none runs, skips with the reason when none can.
test-docker: system-deps venv
	@tools/install-system-deps docker.io mmdebstrap
	FCGI_TEST_DOCKER=1 $(PY) -m pytest -rs tests/test_docker_stack.py

# libFuzzer + ASan + UBSan harnesses for the C code that reads untrusted bytes (connector_c/fuzz/).
# `make test` runs each for about 20 s; `make fuzz FUZZ_SECONDS=N` runs each for longer.
FUZZ_SECONDS ?= 300
FUZZ_CC := clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iconnector_c
FUZZERS := build/fuzz/fuzz_multipart build/fuzz/fuzz_upload build/fuzz/fuzz_fcgi_stdin build/fuzz/fuzz_wire \
           build/fuzz/fuzz_fcgi_request
build/fuzz/fuzz_multipart: connector_c/fuzz/fuzz_multipart.c connector_c/multipart.c connector_c/multipart.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(filter %.c,$^) -o $@
build/fuzz/fuzz_upload: connector_c/fuzz/fuzz_upload.c connector_c/upload.c connector_c/direct_writer.c connector_c/multipart.c connector_c/upload.h connector_c/direct_writer.h connector_c/multipart.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(filter %.c,$^) -o $@
build/fuzz/fuzz_fcgi_stdin: connector_c/fuzz/fuzz_fcgi_stdin.c connector_c/fcgi_stdin.c connector_c/upload.c connector_c/direct_writer.c connector_c/multipart.c connector_c/fcgi_stdin.h connector_c/upload.h connector_c/direct_writer.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(filter %.c,$^) -o $@
build/fuzz/fuzz_wire: connector_c/fuzz/fuzz_wire.c connector_c/fcgi_wire.c connector_c/fcgi_wire.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(filter %.c,$^) -o $@
build/fuzz/fuzz_fcgi_request: connector_c/fuzz/fuzz_fcgi_request.c connector_c/fcgi_request.c connector_c/fcgi_request.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(filter %.c,$^) -o $@

fuzz-build: system-deps $(FUZZERS)

fuzz: fuzz-build venv
	$(PY) tools/fuzz.py --seconds $(FUZZ_SECONDS)

demo: demo-deps runtime
	$(PY) tools/demo.py

# The pictures in docs/, drawn from the Graphviz sources beside them.
DIAGRAMS := $(patsubst %.dot,%.svg,$(wildcard docs/*.dot))
docs/%.svg: docs/%.dot
	dot -Tsvg $< -o $@
docs: system-deps $(DIAGRAMS)

# Every figure in the README's tables, with the peers beside ours (several minutes).
bench: bench-deps venv connector
	$(VENV)/bin/pip install -q -r bench/requirements.txt
	mkdir -p bench/results
	$(PY) bench/parse_bench.py --runs 5 --json bench/results/parse.json
	$(PY) bench/upload_bench.py --runs 5 --json bench/results/upload.json
	$(PY) bench/upload_parts_bench.py --runs 5 --json bench/results/upload_parts.json
	$(PY) bench/hello_bench.py --runs 5 --json bench/results/hello.json
	$(PY) bench/profile_bench.py --json bench/results/profile.json
	$(PY) bench/profile_bench.py --pinned --json bench/results/profile_pinned.json
	$(PY) bench/layers_bench.py --runs 5 --json bench/results/layers.json
	$(PY) bench/connector_bench.py --runs 3 --json bench/results/connector.json
	$(PY) bench/http_bench.py --runs 3 --json bench/results/http.json
	$(PY) bench/session_bench.py --runs 3 --json bench/results/sessions.json
	$(PY) bench/balancer_bench.py --runs 3 --json bench/results/balancer.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .run
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
