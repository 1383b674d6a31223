# tide - build, run, test, bench.
#
#   make            build build/tide and build/lua/tide/{core,engine}.so
#   make run        build, then run the bank example on the embedded store
#   make test       install what is missing, then run every spec, plain and
#                   under AddressSanitizer + UBSan, against DynamoDB Local
#   make bench      benchmarks (see bench/)
#   make install PREFIX=/usr/local DESTDIR=
#
# SAN=1 builds into build-asan/ with -fsanitize=address,undefined; V=1 shows
# the compiler command lines.

V         ?= 0
Q         := $(if $(filter 1,$(V)),,@)
PKGS      := luajit libcurl yajl yaml-0.1 sqlite3 openssl nettle libmicrohttpd rdkafka
CC        ?= cc
PREFIX    ?= /usr/local
LUA_LDIR  ?= $(PREFIX)/share/lua/5.1
LUA_CDIR  ?= $(PREFIX)/lib/x86_64-linux-gnu/lua/5.1
DEPS      ?= tools/deps.sh

ifeq ($(SAN),1)
BUILD     ?= build-asan
OPT       := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD     ?= build
OPT       := -O2 -g
endif

# pkg-config is read only by the recipes that compile and link, never while
# make parses this file: on a fresh machine the packages it asks about are
# installed by the deps step, which runs first. Each result is computed once
# (on first use) and kept; a package still missing then stops the build with
# one line that names it.
pc_missing = $(strip $(foreach p,$(PKGS),$(if $(shell pkg-config --exists $(p) && echo y),,$(p))))
pc_check   = $(if $(pc_missing),$(error tide needs the development files of: $(pc_missing)                (pkg-config names); `make deps` installs them (tools/deps.sh)))
pc_ok      = $(eval pc_ok := $$(pc_check))
pc         = $(pc_ok)$(shell pkg-config $(1) $(2))
PC_CFLAGS  = $(eval PC_CFLAGS := $$(call pc,--cflags,$$(PKGS)))$(PC_CFLAGS)
LIBS_CORE  = $(eval LIBS_CORE := $$(call pc,--libs,openssl nettle yajl yaml-0.1) -lm)$(LIBS_CORE)
LIBS_ENG   = $(eval LIBS_ENG := $$(call pc,--libs,libcurl libmicrohttpd rdkafka) -lm)$(LIBS_ENG)
LIBS_SQL   = $(eval LIBS_SQL := $$(call pc,--libs,sqlite3) -lpthread)$(LIBS_SQL)
LIBS_CLI   = $(eval LIBS_CLI := $$(call pc,--libs,$$(PKGS)) -lm -ldl -lpthread)$(LIBS_CLI)

CFLAGS    += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC $(OPT) \
             $(PC_CFLAGS) -Iruntime/core -Iruntime/engine -Iruntime/sqlite \
             -DTIDE_LUA_LDIR='"$(LUA_LDIR)"' -DTIDE_LUA_CDIR='"$(LUA_CDIR)"'
LDFLAGS   += $(OPT)

CORE_SRC  := $(wildcard runtime/core/*.c)
ENG_SRC   := $(wildcard runtime/engine/*.c)
SQL_SRC   := $(wildcard runtime/sqlite/*.c)
CLI_SRC   := $(wildcard runtime/cli/*.c)
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
ENG_OBJ   := $(ENG_SRC:%.c=$(BUILD)/obj/%.o)
SQL_OBJ   := $(SQL_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
# The pure C of the core (no Lua binding): what the C tests link.
PURE_OBJ  := $(filter-out $(BUILD)/obj/runtime/core/lua_%,$(CORE_OBJ))
HEADERS   := $(wildcard runtime/*/*.h)
# What tide.engine and tide.sqlite take from the core: each shared library
# links the objects it uses, no more (the tide binary links them all).
ENG_CORE  := $(addprefix $(BUILD)/obj/runtime/core/,error.o lua_buffer.o lua_handle.o)
SQL_CORE  := $(addprefix $(BUILD)/obj/runtime/core/,error.o lua_handle.o)

.PHONY: all deps test-deps bench-deps run test test-asan bench install clean

all: $(BUILD)/tide $(BUILD)/lua/tide/core.so $(BUILD)/lua/tide/engine.so $(BUILD)/lua/tide/sqlite.so \
     $(BUILD)/test/codec_test $(BUILD)/test/kafka_mock

# Every compile waits for the deps step (order-only: it never forces a
# rebuild), so the first `make` on a fresh machine installs before it builds.
deps:
	@$(DEPS) build

test-deps:
	@$(DEPS) test

bench-deps:
	@$(DEPS) bench

$(BUILD)/obj/%.o: %.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/lua/tide/core.so: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBS_CORE)

$(BUILD)/lua/tide/engine.so: $(ENG_OBJ) $(ENG_CORE)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBS_ENG)

$(BUILD)/lua/tide/sqlite.so: $(SQL_OBJ) $(SQL_CORE)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBS_SQL)

# -Wl,-E: the binary's own copy of the Lua API must be visible to C modules
# it loads, and its luaopen_* symbols to LuaJIT's FFI.
$(BUILD)/tide: $(CLI_OBJ) $(ENG_OBJ) $(SQL_OBJ) $(CORE_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -Wl,-E -o $@ $^ $(LIBS_CLI)

# The codec's pure layer tested in C (spec/unit/codec_c_spec.lua runs it):
# linked without Lua, so it also proves that layer needs none.
$(BUILD)/test/codec_test: $(BUILD)/obj/spec/c/codec_test.o $(PURE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CORE)

# librdkafka's mock cluster (rdkafka_mock.h) in a process of the suite's
# own: the Kafka brokers the sink specs and the bench publish to.
$(BUILD)/test/kafka_mock: spec/fixtures/kafka_mock.c | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(call pc,--libs,rdkafka)

run: all
	@tools/run-example.sh

test: test-deps
	@tools/test.sh

test-asan: test-deps
	@tools/test.sh --asan-only

# bench/run.sh builds first (make, after the deps step).
bench: bench-deps
	@bench/run.sh

# The example nginx site (examples/nginx/) on loopback, in build/nginx:
#   make nginx [CONFIG=tide.yaml]   start (default: the embedded store), prints the URL
#   make nginx NGINX_CMD=reload     re-render and `nginx -s reload`
#   make nginx NGINX_CMD=stop       graceful stop
.PHONY: nginx
nginx: all
	@tools/nginx.sh $(or $(NGINX_CMD),start) build/nginx $(CONFIG)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LUA_CDIR)/tide $(DESTDIR)$(LUA_LDIR)/tide
	install -m 755 $(BUILD)/tide $(DESTDIR)$(PREFIX)/bin/tide
	install -m 644 $(BUILD)/lua/tide/core.so $(BUILD)/lua/tide/engine.so $(BUILD)/lua/tide/sqlite.so $(DESTDIR)$(LUA_CDIR)/tide/
	cd lua && find tide -name '*.lua' -exec install -D -m 644 {} $(DESTDIR)$(LUA_LDIR)/{} \;

clean:
	rm -rf build build-asan
