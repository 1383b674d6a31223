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
PKGS      := luajit libcurl yajl yaml-0.1 sqlite3 openssl nettle
CC        ?= cc
PREFIX    ?= /usr/local
LUA_LDIR  ?= $(PREFIX)/share/lua/5.1
LUA_CDIR  ?= $(PREFIX)/lib/x86_64-linux-gnu/lua/5.1

ifeq ($(SAN),1)
BUILD     ?= build-asan
OPT       := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD     ?= build
OPT       := -O2 -g
endif

CFLAGS    += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC $(OPT) \
             $(shell pkg-config --cflags $(PKGS)) -Iruntime/core -Iruntime/engine -Iruntime/sqlite \
             -DTIDE_LUA_LDIR='"$(LUA_LDIR)"' -DTIDE_LUA_CDIR='"$(LUA_CDIR)"'
LDFLAGS   += $(OPT)
LIBS_CORE := $(shell pkg-config --libs openssl nettle yajl yaml-0.1) -lm
LIBS_ENG  := $(shell pkg-config --libs libcurl)
LIBS_SQL  := $(shell pkg-config --libs sqlite3)
LIBS_CLI  := $(shell pkg-config --libs $(PKGS)) -lm -ldl -lpthread

CORE_SRC  := $(wildcard runtime/core/*.c)
ENG_SRC   := $(wildcard runtime/engine/*.c)
SQL_SRC   := $(wildcard runtime/sqlite/*.c)
CLI_SRC   := $(wildcard runtime/cli/*.c)
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
ENG_OBJ   := $(ENG_SRC:%.c=$(BUILD)/obj/%.o)
SQL_OBJ   := $(SQL_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
HEADERS   := $(wildcard runtime/*/*.h)

.PHONY: all deps test-deps run test test-asan bench install clean

all: $(BUILD)/tide $(BUILD)/lua/tide/core.so $(BUILD)/lua/tide/engine.so $(BUILD)/lua/tide/sqlite.so

deps:
	@tools/deps.sh build

test-deps:
	@tools/deps.sh test

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/lua/tide/core.so: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBS_CORE)

$(BUILD)/lua/tide/engine.so: $(ENG_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBS_ENG) $(LIBS_CORE)

$(BUILD)/lua/tide/sqlite.so: $(SQL_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBS_SQL) $(LIBS_CORE)

# -Wl,-E: the binary's own copy of the Lua API must be visible to C modules
# it loads, and its luaopen_* symbols to LuaJIT's FFI.
$(BUILD)/tide: $(CLI_OBJ) $(ENG_OBJ) $(SQL_OBJ) $(CORE_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -Wl,-E -o $@ $^ $(LIBS_CLI)

run: deps all
	@tools/run-example.sh

test: test-deps
	@tools/test.sh

test-asan: test-deps
	@tools/test.sh --asan-only

bench: test-deps all
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
