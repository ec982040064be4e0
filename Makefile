# mlaserve — build.
#   make              CPU build (release: -O2 -g)
#   make MODE=debug   -O0 -g        make MODE=asan   ASan + UBSan
#   make CUDA=1       also builds cuda/ with nvcc and links the CUDA backend
#   make test         installs missing dependencies, builds, runs every test, then
#                     the deployment lint, make sanitize-ci and make fuzz-ci
#   make sanitize     every test under ASan+UBSan, engine tests under TSan
#   make fuzz         libFuzzer targets for FUZZ_SECONDS each (clang)
#   make run          installs, builds, makes the demo model, starts it
# Objects go to $(BUILD) (default build/, or build-$(MODE) for non-release modes).

MODE  ?= release
CUDA  ?= 0
CC    ?= cc
NVCC  ?= nvcc
ifeq ($(MODE),release)
BUILD ?= build
else
BUILD ?= build-$(MODE)
endif

PKGS        := jansson libpcre2-8 libmicrohttpd
PKG_CFLAGS  := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -ljansson -lpcre2-8 -lmicrohttpd)

WARN    := -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE $(WARN) -I. -pthread $(PKG_CFLAGS) -MMD -MP
ifeq ($(MODE),debug)
OPT := -O0 -g
else ifeq ($(MODE),asan)
OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(MODE),tsan)
OPT := -O1 -g -fsanitize=thread -fno-omit-frame-pointer
else ifeq ($(MODE),fuzz)
# clang only: objects carry libFuzzer's coverage hooks; fuzz/ links -fsanitize=fuzzer.
OPT := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
OPT := -O2 -g
endif
CFLAGS  += $(CFLAGS_COMMON) $(OPT)
LDFLAGS += $(filter -fsanitize=%,$(OPT)) -pthread
LDLIBS  += $(PKG_LIBS) -lm

# SIMD variants are compiled with their own flags and chosen at run time.
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c

# The server's pure modules (OpenAI parsing, output parsers, metrics) go in the
# library too, so unit tests and fuzz targets link them; the HTTP front end and
# the commands are the binary's own.
SERVER_LIB_SRC := server/openai.c server/oai_chat.c server/oai_responses.c server/resp_store.c server/chat_output.c server/reasoning.c server/toolcall.c \
                  server/metrics.c server/conn_guard.c server/cors.c
LIB_SRC    := $(wildcard common/*.c engine/*.c cpu/*.c) $(SERVER_LIB_SRC)
SERVER_SRC := $(filter-out $(SERVER_LIB_SRC),$(wildcard server/*.c))
TEST_SRC   := $(wildcard test/unit/test_*.c)
BENCH_SRC  := $(wildcard bench/bench_*.c)
GEN_SRC    := $(BUILD)/gen/presets.c

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/presets.o
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/version.o
TEST_BIN   := $(TEST_SRC:test/unit/%.c=$(BUILD)/test/%)
BENCH_BIN  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC)))
CU_SRC    := $(wildcard cuda/*.cu)
CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/%.o)
NVCCFLAGS ?= -O2 -std=c++17 -I. -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter \
             -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
CFLAGS    += -DMS_CUDA=1 -I$(CUDA_HOME)/include
LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lnccl -lcudart -lcublasLt -lcublas -lstdc++
LIB_OBJ   += $(CU_OBJ)
CUDA_TEST_BIN := $(patsubst test/cuda/%.c,$(BUILD)/test-cuda/%,$(wildcard test/cuda/*.c))
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lnccl -lcudart -lcublasLt -lcublas -lstdc++
# The device tests and the CUDA benchmark link only what they use (no jansson /
# PCRE2 / libmicrohttpd), so `make CUDA=1 cuda-check` builds on a GPU machine
# that lacks those headers (scripts/gpu-check.sh).
CUDA_CORE_SRC := $(wildcard cpu/*.c) engine/kv.c engine/weight.c common/dtype.c common/err.c common/threadpool.c
CUDA_CORE_OBJ := $(CUDA_CORE_SRC:%.c=$(BUILD)/%.o) $(CU_OBJ)
CUDA_CORE_LIB := $(BUILD)/libmlaserve_cuda_core.a
CUDA_BENCH_BIN := $(BUILD)/bench/bench_cuda
endif

BIN := $(BUILD)/mlaserve
TSAN_SHIM_STAMP := $(BUILD)/test-tsan/shim-syntax.ok

.PHONY: all test test-unit run deps clean bench
all: $(BIN) $(TEST_BIN) $(BENCH_BIN) $(CUDA_TEST_BIN) $(CUDA_BENCH_BIN) $(TSAN_SHIM_STAMP)

$(BIN): $(SERVER_OBJ) $(BUILD)/libmlaserve.a
	$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(BUILD)/libmlaserve.a $(LDLIBS)

$(BUILD)/libmlaserve.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -c -o $@ $<

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

# The build's version and commit (server/version.h); rewritten only when they change.
$(BUILD)/gen/version.c: FORCE
	@sh scripts/gen-version.sh $@

.PHONY: FORCE
FORCE:

# Model presets (configs/presets/NAME/*.json) embedded as C strings.
$(BUILD)/gen/presets.c: scripts/embed-presets.sh $(wildcard configs/presets/*/*.json)
	@mkdir -p $(dir $@)
	sh scripts/embed-presets.sh configs/presets > $@

$(BUILD)/test/%: test/unit/%.c $(BUILD)/libmlaserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmlaserve.a $(LDLIBS) -lcriterion

$(BUILD)/bench/%: bench/%.c $(BUILD)/libmlaserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmlaserve.a $(LDLIBS)

# GPU kernel tests link without libmicrohttpd/jansson/Criterion (the GPU machine lacks them).
$(BUILD)/test-cuda/%: test/cuda/%.c $(CUDA_CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(CUDA_CORE_LIB) $(CUDA_LIBS) -lm

deps:
	sh scripts/deps.sh

# With nvcc present, the CUDA backend is also built (into $(BUILD)-cuda) and its
# device tests run; they skip with a one-line message where there is no GPU.
test:
	sh scripts/deps.sh --if-missing
	$(MAKE) all
	sh scripts/run-tests.sh $(BUILD)
	@if command -v $(NVCC) >/dev/null 2>&1; then \
	    $(MAKE) CUDA=1 BUILD=$(BUILD)-cuda all && \
	    for t in $(BUILD)-cuda/test-cuda/*; do [ -x "$$t" ] || continue; echo "== $$t"; $$t || exit 1; done; \
	    echo "== test/cuda/e2e_golden.sh"; sh test/cuda/e2e_golden.sh $(BUILD)-cuda/mlaserve $(BUILD)/models test/golden || exit 1; \
	else echo "nvcc not found: CUDA backend not built"; fi
	sh scripts/lint-deploy.sh
	$(MAKE) sanitize-ci
	@if command -v $(FUZZ_CC) >/dev/null 2>&1; then $(MAKE) fuzz-ci; \
	else echo "$(FUZZ_CC) not found: fuzzers not run"; fi

run:
	sh scripts/deps.sh --if-missing
	$(MAKE) $(BIN)
	sh scripts/run-demo.sh $(BUILD)

bench:
	$(MAKE) $(BIN)
	sh scripts/bench-cpu.sh $(BUILD)

clean:
	rm -rf build build-* 

ifeq ($(CUDA),1)
.PHONY: cuda-check
# What scripts/gpu-check.sh needs: the device tests and the CUDA benchmark.
cuda-check: $(CUDA_TEST_BIN) $(CUDA_BENCH_BIN)

$(CUDA_CORE_LIB): $(CUDA_CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

# nvcc writes no dependency files here: every .cu depends on every cuda/ header.
$(CU_OBJ): $(wildcard cuda/*.cuh cuda/*.h) engine/backend.h engine/weight.h engine/kv.h engine/comm.h common/dtype.h \
          common/err.h

$(BUILD)/bench/bench_cuda.o: bench/bench_cuda.cu $(wildcard cuda/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(CUDA_BENCH_BIN): $(BUILD)/bench/bench_cuda.o $(CUDA_CORE_LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(CUDA_CORE_LIB) $(CUDA_LIBS) -lm
endif

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- sanitizers and fuzzing (issue #6; docs/operations.md) -----------------
# make sanitize    every test under ASan+UBSan (build-asan/), then the engine,
#                  scheduler, kernel and tokenizer tests under TSan (build-tsan/;
#                  Criterion cannot run under TSan, so those files are compiled
#                  against the in-process shim in test/tsan/). Any report fails.
# make fuzz        builds the libFuzzer targets (clang, build-fuzz/) and runs each
#                  for FUZZ_SECONDS (default 300); make fuzz-ci: 60 s each.
TSAN_TESTS    := test_sched test_model_golden test_cpu_ops test_tokenizer test_ep test_comm_tcp test_waitgroup test_resp_store
# make test runs the TSan half on the scheduler (engine thread + client threads)
# and the tokenizer (shared read-only across HTTP threads) only: the other two
# take ~11 min under TSan on 2 cores (docs/operations.md has the timings).
TSAN_CI_TESTS := test_sched test_tokenizer test_ep test_comm_tcp test_waitgroup test_resp_store
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 300
FUZZ_CC      ?= clang

.PHONY: sanitize sanitize-asan sanitize-tsan sanitize-ci fuzz fuzz-build fuzz-ci lint-deploy
sanitize:
	sh scripts/deps.sh --if-missing
	sh scripts/sanitize.sh asan
	MLASERVE_TSAN_TESTS="$(TSAN_TESTS)" sh scripts/sanitize.sh tsan

sanitize-asan:
	sh scripts/sanitize.sh asan

sanitize-tsan:
	MLASERVE_TSAN_TESTS="$(TSAN_TESTS)" sh scripts/sanitize.sh tsan

# What make test runs: the whole suite under ASan+UBSan, the TSan subset.
# (TSan: the preemption test repeats the 16-client test with a tiny KV pool and
# takes over 10 min under TSan; make sanitize runs it.)
sanitize-ci:
	sh scripts/sanitize.sh asan
	MLASERVE_TSAN_TESTS="$(TSAN_CI_TESTS)" MLASERVE_TSAN_ARGS="--exclude sched/preemption_keeps_outputs" \
	    sh scripts/sanitize.sh tsan

lint-deploy:
	sh scripts/lint-deploy.sh

# Every build checks that the TSan test files compile against the shim (it has
# only the cr_assert / cr_expect forms the tests use so far), so a test using a
# form it lacks fails here, not 30 minutes into make test's TSan stage.
$(TSAN_SHIM_STAMP): $(addprefix test/unit/,$(addsuffix .c,$(TSAN_TESTS))) test/tsan/criterion/criterion.h
	@mkdir -p $(dir $@)
	for t in $(TSAN_TESTS); do $(CC) -Itest/tsan $(filter-out -MMD -MP,$(CFLAGS_COMMON)) -fsyntax-only test/unit/$$t.c || exit 1; done
	@touch $@

# Criterion test files built against test/tsan/criterion/criterion.h (no -lcriterion).
$(BUILD)/test-tsan/%: test/unit/%.c $(BUILD)/libmlaserve.a test/tsan/criterion/criterion.h
	@mkdir -p $(dir $@)
	$(CC) -Itest/tsan $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmlaserve.a $(LDLIBS)

# The parsers under test live in common/ (+ the OpenAI parser in server/); the
# fuzz archive leaves out cpu/ and engine/ (kernels, not input parsing).
FUZZ_LIB_OBJ := $(filter $(BUILD)/common/% $(BUILD)/server/%,$(LIB_OBJ))
$(BUILD)/libfuzzparse.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/fuzz/%: fuzz/%.c fuzz/fuzz_util.h $(BUILD)/libfuzzparse.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/libfuzzparse.a $(LDLIBS)

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "fuzz: $(FUZZ_CC) not found (apt-get install clang)"; exit 1; }
	$(MAKE) MODE=fuzz CC=$(FUZZ_CC) BUILD=build-fuzz $(FUZZ_TARGETS:%=build-fuzz/fuzz/%)

fuzz: fuzz-build
	sh scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-ci: fuzz-build
	sh scripts/fuzz.sh 60 $(FUZZ_TARGETS)
