# forge — build, test and run.
#
#   make            build build/forge, build/libforge.a and build/libforge.so
#   make run        build, fetch the default model if absent, answer PROMPT with it
#   make test       unit tests (Criterion) + end-to-end CLI tests + forge serve tests
#   make asan       the same tests under AddressSanitizer + UBSan, and the
#                   loader on 1,000 mutated headers of $(MODEL) (mutate-model)
#   make server-test-flood   forge serve against 1,100 trickling connections for 60 s
#   make fuzz       libFuzzer on the GGUF reader, the vocabulary loader and the
#                   tokenizers (FUZZ_SECONDS each, default 60)
#   make test-gpu   the GPU tier: every GPU op against the CPU reference, and
#                   end to end (needs a GPU; without one the tests say SKIPPED)
#   make build/bench-ops   timings of issue 7's new ops beside the llama
#                   path's (bench/ops.c, bench/NOTES.md); not in all or test
#
# GPU backend: GPU=auto (default: CUDA when nvcc is found, else none),
# GPU=cuda, GPU=hip (hipcc; HIP_ARCHS, default gfx90a gfx1030) or GPU=none.
#
# Everything goes under build/. Sources are found by wildcard: every .c under
# src/ except src/cli/ goes into libforge; src/cli/ makes the forge binary;
# tests/unit/*.c make one Criterion test binary.

# Set-up: tools/deps checks what the goals need and installs what is missing
# (as root or with password-less sudo; else it prints the apt-get line), before
# anything below asks pkg-config. The tests' Python packages may live in a
# virtual environment at build/venv, first on PATH.
export PATH := $(CURDIR)/build/venv/bin:$(PATH)
ifneq ($(MAKECMDGOALS),clean)
ifneq ($(shell GPU=$(GPU) tools/deps $(MAKECMDGOALS) >&2 && echo ok),ok)
$(error forge: missing build dependencies (listed above))
endif
endif

CC      ?= cc
BUILD   ?= build
PKGS    := libpcre2-8 libcjson libedit
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CPPFLAGS_ALL := -std=c11 -ffp-contract=off -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc \
                $(shell pkg-config --cflags $(PKGS)) -MMD -MP
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lm -lpthread
# The HTTP server (src/server/) is part of the forge binary, not of
# libforge: an application embedding the engine does not link an HTTP stack.
SERVER_CFLAGS := $(shell pkg-config --cflags libmicrohttpd)
SERVER_LIBS := $(shell pkg-config --libs libmicrohttpd)
TEST_LDLIBS := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

# The GPU backend: src/backend/gpu/*.cu and kernels/*.cu, built by nvcc or
# hipcc into libforge; a build without one links src/backend/gpu/none.c.
GPU ?= auto
NVCC ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
HIPCC ?= hipcc
ifeq ($(GPU),auto)
override GPU := $(if $(NVCC),cuda,none)
endif
GPU_SRC := $(sort $(wildcard src/backend/gpu/*.cu src/backend/gpu/kernels/*.cu))
CUDA_ARCHS ?= 80 89 90
HIP_ARCHS ?= gfx90a gfx1030
GPU_FLAGS := -std=c++17 -O2 -Iinclude -Isrc -MMD -MP
ifeq ($(GPU),cuda)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
GPU_CC  := $(NVCC)
GPU_FLAGS += $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) -Xcompiler -fPIC,-Wall -Werror all-warnings
GPU_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++
else ifeq ($(GPU),hip)
GPU_CC  := $(HIPCC)
GPU_FLAGS += -x hip -DFG_GPU_HIP $(foreach a,$(HIP_ARCHS),--offload-arch=$(a)) -fPIC -Wall -Werror
GPU_LIBS := -lamdhip64 -lstdc++
else ifeq ($(GPU),none)
GPU_SRC :=
else
$(error GPU must be auto, cuda, hip or none, not '$(GPU)')
endif
GPU_OBJ := $(GPU_SRC:%.cu=$(BUILD)/%.cu.o)

LIB_SRC  := $(shell find src -name '*.c' -not -path 'src/cli/*' -not -path 'src/server/*' | sort)
ifneq ($(GPU),none)
LIB_SRC  := $(filter-out src/backend/gpu/none.c,$(LIB_SRC))
endif
CLI_SRC  := $(sort $(wildcard src/cli/*.c src/server/*.c))
TEST_SRC := $(sort $(wildcard tests/unit/*.c))
GPU_TEST_SRC := $(sort $(wildcard tests/gpu/*.c)) tests/unit/test_util.c

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
GPU_TEST_OBJ := $(GPU_TEST_SRC:%.c=$(BUILD)/%.o)
LDLIBS   += $(GPU_LIBS)

MODEL ?= models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all run test test-gpu unit e2e server-test server-test-flood asan fuzz fuzz-build models clean

all: $(BUILD)/forge $(BUILD)/libforge.a $(BUILD)/libforge.so

# SIMD kernels: a file named *_avx2.c or *_avx512.c is compiled with that
# instruction set (x86 only; elsewhere it compiles to a stub) and its code is
# used only after a run-time cpuid check. Everything else stays portable.
ifneq ($(filter x86_64% amd64%,$(shell $(CC) -dumpmachine)),)
ISA_avx2   := -mavx2 -mfma -mf16c
ISA_avx512 := $(ISA_avx2) -mavx512f -mavx512bw -mavx512vl -mavx512vnni
endif
$(BUILD)/%_avx2.o: ISA = $(ISA_avx2)
$(BUILD)/%_avx512.o: ISA = $(ISA_avx512)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS) $(ISA) $(WARN) -fPIC -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(GPU_CC) $(GPU_FLAGS) -c $< -o $@

$(BUILD)/libforge.a: $(LIB_OBJ) $(GPU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libforge.so: $(LIB_OBJ) $(GPU_OBJ)
	$(CC) -shared $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/src/server/%.o: CPPFLAGS_ALL += $(SERVER_CFLAGS)
$(BUILD)/forge: $(CLI_OBJ) $(BUILD)/libforge.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libforge.a $(LDLIBS) $(SERVER_LIBS)

$(BUILD)/unit-tests: $(TEST_OBJ) $(BUILD)/libforge.a
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libforge.a $(TEST_LDLIBS) $(LDLIBS)

# The models the tests compare against. A fetch that fails (no network) leaves
# the model-dependent tests to report SKIPPED with the reason.
models:
	-@tools/fetch-model smollm2
	-@tools/fetch-model gemma3

PROMPT ?= Explain in two sentences why the sky is blue.
run: $(BUILD)/forge
	@tools/fetch-model smollm2
	$(BUILD)/forge run -m $(MODEL) --chat -p "$(PROMPT)" -n 128

$(BUILD)/gpu-tests: $(GPU_TEST_OBJ) $(BUILD)/libforge.a
	$(CC) $(CFLAGS) -o $@ $(GPU_TEST_OBJ) $(BUILD)/libforge.a $(TEST_LDLIBS) $(LDLIBS)

# tests/fuzz/mutate_model.c: the model loader on 1,000 mutations of a real
# model's header, metadata and tensor table (issue 14); run by make asan.
$(BUILD)/mutate-model: $(BUILD)/tests/fuzz/mutate_model.o $(BUILD)/libforge.a
	$(CC) $(CFLAGS) -o $@ $(BUILD)/tests/fuzz/mutate_model.o $(BUILD)/libforge.a $(LDLIBS)

# bench/ops.c: a benchmark program, not a test (bench/NOTES.md says how to run it).
$(BUILD)/bench-ops: $(BUILD)/bench/ops.o $(BUILD)/libforge.a
	$(CC) $(CFLAGS) -o $@ $(BUILD)/bench/ops.o $(BUILD)/libforge.a $(LDLIBS)

test-gpu: $(BUILD)/forge $(BUILD)/gpu-tests
	tests/unit/run.sh $(BUILD)/gpu-tests

unit: $(BUILD)/unit-tests
	tests/unit/run.sh $(BUILD)/unit-tests

e2e: $(BUILD)/forge
	FORGE=$(BUILD)/forge tests/e2e/run.sh

server-test: $(BUILD)/forge
	FORGE=$(BUILD)/forge tests/server/run.py

# The issue-14 slow-client case at full size: 1,100 trickling connections for
# 60 s at the default deadlines and connection limit (make test runs 300 for 12 s).
server-test-flood: $(BUILD)/forge
	FORGE=$(BUILD)/forge FORGE_TEST_FLOOD=full tests/server/run.py

test: all $(BUILD)/unit-tests $(BUILD)/gpu-tests models
	tests/unit/run.sh $(BUILD)/unit-tests
	tests/unit/run.sh $(BUILD)/gpu-tests
	FORGE=$(BUILD)/forge tests/e2e/run.sh
	FORGE=$(BUILD)/forge tests/server/run.py

# The sanitizer tier: everything rebuilt with ASan+UBSan into build-asan/.
asan:
	$(MAKE) BUILD=build-asan OPT=-O1 GPU=none \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    build-asan/forge build-asan/unit-tests build-asan/mutate-model
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=exitcode=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    tests/unit/run.sh build-asan/unit-tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build-asan/mutate-model $(MODEL) 1000
	ASAN_OPTIONS=detect_leaks=1 FORGE=build-asan/forge tests/e2e/run.sh
	ASAN_OPTIONS=detect_leaks=1 FORGE=build-asan/forge tests/server/run.py

# libFuzzer targets: fuzz-gguf (the GGUF reader), fuzz-vocab (tokenizer
# loading from fuzzed metadata), fuzz-encode (arbitrary text through the
# tokenizers). Each runs FUZZ_SECONDS. Needs clang with its runtime (Debian:
# clang, libclang-rt-dev).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := gguf vocab encode
FUZZ_BINS := $(FUZZ_TARGETS:%=$(BUILD)/fuzz-%)
fuzz-build: $(FUZZ_BINS)
# The fuzzers are built by clang without the GPU objects: the library's C
# sources with the no-GPU stubs (src/backend/gpu/none.c), whatever GPU is.
FUZZ_LIB_SRC := $(shell find src -name '*.c' -not -path 'src/cli/*' -not -path 'src/server/*' | sort)
$(BUILD)/fuzz-%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_SRC)
	@mkdir -p $(BUILD)
	$(FUZZ_CC) -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc \
	    $(shell pkg-config --cflags $(PKGS)) -O1 -g -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all -o $@ $^ $(LDLIBS)
fuzz: $(FUZZ_BINS)
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(BUILD)/fuzz-corpus-$$t && \
	    echo "fuzz: $$t for $(FUZZ_SECONDS) s" && \
	    $(BUILD)/fuzz-$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 \
	        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(BUILD)/ \
	        $(BUILD)/fuzz-corpus-$$t tests/fuzz/seeds \
	        >$(BUILD)/fuzz-$$t.log 2>&1 || { tail -50 $(BUILD)/fuzz-$$t.log; exit 1; }; \
	    grep -E "^Done|number_of_executed_units" $(BUILD)/fuzz-$$t.log; \
	done

clean:
	rm -rf build build-asan build-hip

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(GPU_OBJ:.o=.d) $(GPU_TEST_OBJ:.o=.d) $(BUILD)/bench/ops.d \
    $(BUILD)/tests/fuzz/mutate_model.d
