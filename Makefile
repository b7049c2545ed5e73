# tidelog developer commands. Everything runs from a project-local virtualenv (.venv),
# created on first use, so a fresh machine needs nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint format fuzz soak run bench-codec bench-storage bench-groups bench bench-wave2 \
	bench-full bench-install bench-peers bench-queues cluster etcd clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole suite, then the integration and CLI tests again with in-memory brokers (issue 14;
# tests marked storage_bound, where storage is under test, are left out of that run). The
# gateway is a client of the broker, so the storage under it is covered by those two.
test: $(STAMP)
	$(BIN)/pytest
	$(BIN)/pytest tests/integration tests/cli --tidelog-storage=memory

lint: $(STAMP)
	$(BIN)/ruff check tidelog tests bench
	$(BIN)/ruff format --check tidelog tests bench
	$(BIN)/mypy tidelog

format: $(STAMP)
	$(BIN)/ruff format tidelog tests bench
	$(BIN)/ruff check --fix tidelog tests bench

# A longer fuzz run of the frame decoder and the batch reader (make test runs 100,000 inputs).
fuzz: $(STAMP)
	TIDELOG_FUZZ_INPUTS=2000000 $(BIN)/pytest tests/unit/test_fuzz.py -q

# Hundreds of SIGKILL crash rounds against the log (make test runs 20), and 300 broker SIGKILLs
# under an idempotent producer (make test runs 30).
# 400 rounds of damaged files between broker restarts, the corruption soak (make test runs 40).
# 100 cleanings of a compacted log SIGKILLed at random points (make test runs 4).
# 100 coordinator SIGKILLs under a consuming, committing group of 3 (make test runs 3).
# 40 broker SIGKILLs while 4 queue workers hold messages (make test runs 10).
# 200 leader SIGKILLs of a 3-broker, factor-3 cluster under acks=all (make test runs 20), and 100
# at factor 2, min ISR 1 (make test runs 6); 20 leaders SIGSTOPped past their lease (make test
# runs 2); 9 broker SIGKILLs under a group of 3 in that cluster (make test runs 3); 10 under
# queue workers there, the queue's leader and its share coordinator in turn (make test runs 2).
# 20 leaders blackholed from etcd (make test runs 4) and 4 rounds of followers cut from their
# leader (make test runs 1), through userspace proxies (tests/system/test_netcut.py).
# 50 power losses of a follower and 50 of a leader, each followed by a leader SIGKILL, in that
# cluster (make test runs 3 of each), and 50 of a leader started again at once (make test: 0).
# schemathesis over every gateway endpoint, 200 examples per operation and a random seed (make
# test runs 10 with a fixed seed).
soak: $(STAMP)
	TIDELOG_SOAK_ROUNDS=300 $(BIN)/pytest tests/system/test_log_crash.py -q
	TIDELOG_IDEMPOTENCE_KILLS=300 $(BIN)/pytest tests/system/test_idempotent_crash.py -q -s
	TIDELOG_CONN_SOAK_ROUNDS=50 $(BIN)/pytest tests/system/test_connection_soak.py -q -s
	TIDELOG_CORRUPTION_ROUNDS=400 $(BIN)/pytest tests/system/test_corruption_soak.py -q -s
	TIDELOG_CLEAN_SOAK_ROUNDS=100 $(BIN)/pytest tests/system/test_log_clean_crash.py -q -s
	TIDELOG_GROUP_KILLS=100 $(BIN)/pytest tests/system/test_coordinator_crash.py -q
	TIDELOG_QUEUE_KILLS=40 $(BIN)/pytest tests/system/test_queue_crash.py -q -s
	TIDELOG_REPLICATION_KILLS=200 TIDELOG_REPLICATION_F2_KILLS=100 $(BIN)/pytest tests/system/test_replication.py -q -s
	TIDELOG_REPLICATION_PAUSES=20 $(BIN)/pytest tests/system/test_replication_pause.py -q -s
	TIDELOG_NETCUT_ETCD_CUTS=20 TIDELOG_NETCUT_FOLLOWER_ROUNDS=4 $(BIN)/pytest tests/system/test_netcut.py -q -s
	TIDELOG_REPLICATION_GROUP_KILLS=9 $(BIN)/pytest tests/system/test_replication_group.py -q -s
	TIDELOG_REPLICATION_QUEUE_KILLS=10 $(BIN)/pytest tests/system/test_replication_queue.py -q -s
	TIDELOG_POWERLOSS_ROUNDS=50 TIDELOG_POWERLOSS_AT_ONCE_ROUNDS=50 $(BIN)/pytest tests/system/test_replication_powerloss.py -q -s
	TIDELOG_SCHEMATHESIS_EXAMPLES=200 $(BIN)/pytest tests/gateway/test_openapi.py -q

# Starts a broker on 127.0.0.1:7070 with its data in ./tidelog-data (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/tidelog serve

# etcd for clusters (Debian's etcd-server), where apt works; a note where it does not.
etcd:
	@command -v etcd >/dev/null 2>&1 || { \
	  echo "installing etcd-server"; \
	  { apt-get install -y -qq etcd-server >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq etcd-server >/dev/null 2>&1; }; } \
	    || echo "note: could not install etcd-server; install an etcd binary (3.4+) on PATH"; }

# etcd and five brokers on 127.0.0.1:7070-7074 (data in ./tidelog-cluster), and the console
# (issue 17). `quit` or Ctrl-C stops them all.
cluster: $(STAMP) etcd
	$(BIN)/tidelog cluster up --brokers 5

bench-codec: $(STAMP)
	$(BIN)/python bench/codec.py

bench-storage: $(STAMP)
	$(BIN)/python bench/storage.py

bench-groups: $(STAMP)
	$(BIN)/python bench/groups.py

# Side by side with Redis Streams and NATS JetStream (issue 7). Installs the bench extra and,
# where apt works, redis-server and nats-server; a peer that cannot be installed is skipped
# with a note. Writes the section "Side by side ..." of docs/BENCHMARKS.md and two PNG charts.
BENCH_STAMP := $(VENV)/.bench-installed

bench-install: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-peers:
	@for bin in redis-server nats-server; do \
	  command -v $$bin >/dev/null 2>&1 && continue; \
	  echo "installing $$bin"; \
	  { apt-get install -y -qq $$bin >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$bin >/dev/null 2>&1; }; } \
	    || echo "note: could not install $$bin; the bench will skip it"; \
	done

bench: bench-install bench-peers
	$(BIN)/python bench/sidebyside.py --plan quick --write docs/BENCHMARKS.md --charts docs \
	  --command "make bench   # python bench/sidebyside.py --plan quick --write docs/BENCHMARKS.md --charts docs"
	$(MAKE) bench-wave2

# Issue 24's goals, one script each, three runs (docs/BENCHMARKS.md has the figures): produce
# through send() and send_many(), small requests (broker CPU per request, beside Redis), large
# records, consume through async-for and batches(), the OMB 1-topic-16-partitions-1kb workload.
bench-wave2: bench-install bench-peers
	cd bench && ../$(BIN)/python produce_many.py --runs 3
	cd bench && ../$(BIN)/python small_requests.py --runs 3
	cd bench && ../$(BIN)/python large.py --runs 3
	cd bench && ../$(BIN)/python consume.py --runs 3
	cd bench && for api in send send_many; do ../$(BIN)/python omb.py --api $$api || exit 1; done

# Queues side by side (issue 19): share groups vs Redis Streams and NATS JetStream work queues.
bench-queues: bench-install bench-peers
	$(BIN)/python bench/queues.py

bench-full: bench-install bench-peers
	$(BIN)/python bench/sidebyside.py --plan full --write docs/BENCHMARKS.md --charts docs \
	  --command "make bench-full   # python bench/sidebyside.py --plan full --write docs/BENCHMARKS.md --charts docs"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
