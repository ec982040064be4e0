# mlaserve — build.
#   make              CPU build (release: -O2 -g)
#   make MODE=debug   -O0 -g        make MODE=asan   ASan + UBSan
#   make CUDA=1       also builds cuda/ with nvcc and links the CUDA backend
#   make test         installs missing dependencies, builds, runs every test
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
else
OPT := -O2 -g
endif
CFLAGS  += $(CFLAGS_COMMON) $(OPT)
LDFLAGS += $(filter -fsanitize=%,$(OPT)) -pthread
LDLIBS  += $(PKG_LIBS) -lm

# SIMD variants are compiled with their own flags and chosen at run time.
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c

LIB_SRC    := $(wildcard common/*.c engine/*.c cpu/*.c)
SERVER_SRC := $(wildcard server/*.c)
TEST_SRC   := $(wildcard test/unit/test_*.c)
BENCH_SRC  := $(wildcard bench/bench_*.c)
GEN_SRC    := $(BUILD)/gen/presets.c

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/presets.o
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
TEST_BIN   := $(TEST_SRC:test/unit/%.c=$(BUILD)/test/%)
BENCH_BIN  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC)))
CU_SRC    := $(wildcard cuda/*.cu)
CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/%.o)
NVCCFLAGS ?= -O2 -std=c++17 -I. -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter \
             -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
CFLAGS    += -DMS_CUDA=1 -I$(CUDA_HOME)/include
LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lcublas -lstdc++
LIB_OBJ   += $(CU_OBJ)
CUDA_TEST_BIN := $(patsubst test/cuda/%.c,$(BUILD)/test-cuda/%,$(wildcard test/cuda/*.c))
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lcublas -lstdc++
endif

BIN := $(BUILD)/mlaserve

.PHONY: all test test-unit run deps clean bench
all: $(BIN) $(TEST_BIN) $(BENCH_BIN) $(CUDA_TEST_BIN)

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
$(BUILD)/test-cuda/%: test/cuda/%.c $(BUILD)/libmlaserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmlaserve.a $(CUDA_LIBS) -lm

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
	    for t in $(BUILD)-cuda/test-cuda/*; do echo "== $$t"; $$t || exit 1; done; \
	else echo "nvcc not found: CUDA backend not built"; fi

run:
	sh scripts/deps.sh --if-missing
	$(MAKE) $(BIN)
	sh scripts/run-demo.sh $(BUILD)

bench:
	$(MAKE) $(BIN)
	sh scripts/bench-cpu.sh $(BUILD)

clean:
	rm -rf build build-* 

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
