-- tide.ffi: the one module that declares C to LuaJIT's FFI.
--
-- tide reaches C in two ways, each where it fits:
--
-- - the Lua C API (tide.core, tide.engine, tide.sqlite) for whatever builds
--   Lua values, yields, runs the loop or calls back into Lua;
-- - this module for leaf functions called often (signing): C functions
--   named tide_ffi_*, with no lua_State, that return 0 or a negative
--   TIDE_E* code and fill a struct tide_error (runtime/core/tide_ffi.h);
--   and the few libc functions tide's Lua needs, wrapped below so that no
--   other module handles cdata for them.
--
-- Every declaration is made here, once: ffi.cdef of a struct twice fails,
-- and modules are reloaded (tests, fresh instances of tide.core), so the
-- block is guarded by one of its types. Other code must not declare these
-- names itself. When the module loads it checks each struct's layout
-- against the C compiler's (tide_ffi_layout) and raises on a difference:
-- a stale build, which would otherwise read the wrong bytes.
--
--   local tffi = require "tide.ffi"
--   tffi.lib              -- tide's C library: tffi.lib.tide_ffi_sigv4_sign(...)
--   tffi.new_error()      -- a struct tide_error for the last argument
--   tffi.message(err)     -- its message, as a Lua string
--   tffi.hostname()       -- gethostname(2), or "host"
--   tffi.pid()            -- getpid(2)
--   tffi.realtime_ms()    -- gettimeofday(2) in whole milliseconds
--   tffi.monotonic_ms()   -- clock_gettime(CLOCK_MONOTONIC) in milliseconds, read now
--   tffi.spawn(argv)      -- posix_spawnp(3) with stdout on a pipe (stdin
--                         -- from /dev/null, stderr inherited): pid, read fd | nil, msg
--   tffi.kill(pid, sig), tffi.waitpid(pid [, nohang]) -> pid | 0, status | nil, msg
--   tffi.alive(pid)       -- false only when no process has that id (kill(pid, 0): ESRCH)
--   tffi.close(fd)
--
-- Nothing reached from here calls back into Lua or yields: what backs a
-- pointer passed to C stays referenced by the caller until C returns.
local ffi = require "ffi"

local M = {}

if not pcall(ffi.typeof, "struct tide_ffi_layout") then
  ffi.cdef [[
    struct tide_error { int code; char message[512]; };
    struct tide_ffi_layout { const char *type; const char *field; double value; };
    const struct tide_ffi_layout *tide_ffi_layout(void);

    struct tide_buffer { size_t len; char data[1]; };

    struct tide_sigv4_signer;
    struct tide_sigv4_header {
      const char *name; size_t name_len; const char *value; size_t value_len;
    };
    struct tide_ffi_sigv4_in {
      double time; size_t body_len; size_t secret_len;
      const struct tide_sigv4_header *headers; size_t n_headers;
      int normalize_path; int sign_body; int sign_session_token; int debug;
    };
    struct tide_ffi_sigv4_out {
      const char *authorization; double authorization_len;
      const char *amz_date; const char *content_sha256; const char *signature;
      const char *canonical_request; double canonical_request_len;
      const char *string_to_sign; double string_to_sign_len;
      double canonical_request_resumed; double string_to_sign_resumed;
      double key_derivations;
    };
    int tide_ffi_sigv4_signer_new(struct tide_sigv4_signer **out, struct tide_error *err);
    void tide_ffi_sigv4_signer_delete(struct tide_sigv4_signer *s);
    int tide_ffi_sigv4_sign(struct tide_sigv4_signer *s, const struct tide_ffi_sigv4_in *in,
                            const char *method, const char *host, const char *path,
                            const char *query, const char *body, const char *access_key_id,
                            const char *secret_access_key, const char *session_token,
                            const char *region, const char *service,
                            struct tide_ffi_sigv4_out *out, struct tide_error *err);

    int tide_ffi_utf8_check(const char *s, size_t len, double *bad);
    int tide_ffi_text_check(const char *s, size_t len, double *at);
    int tide_ffi_json_check(const char *s, size_t len, double *offset, struct tide_error *err);

    struct tide_timeval { long tv_sec; long tv_usec; };
    int gettimeofday(struct tide_timeval *tv, void *tz);
    struct tide_timespec { long tv_sec; long tv_nsec; };
    int clock_gettime(int clock_id, struct tide_timespec *ts);
    int gethostname(char *name, size_t len);
    int getpid(void);

    typedef struct { int allocated; int used; void *actions; int pad[16]; } tide_spawn_actions_t;
    int posix_spawn_file_actions_init(tide_spawn_actions_t *fa);
    int posix_spawn_file_actions_destroy(tide_spawn_actions_t *fa);
    int posix_spawn_file_actions_adddup2(tide_spawn_actions_t *fa, int fd, int newfd);
    int posix_spawn_file_actions_addclose(tide_spawn_actions_t *fa, int fd);
    int posix_spawn_file_actions_addopen(tide_spawn_actions_t *fa, int fd, const char *path,
                                         int oflag, unsigned int mode);
    int posix_spawnp(int *pid, const char *file, const tide_spawn_actions_t *fa,
                     const void *attr, char *const argv[], char *const envp[]);
    extern char **environ;
    int pipe2(int fds[2], int flags);
    int close(int fd);
    int kill(int pid, int sig);
    int waitpid(int pid, int *status, int options);
    char *strerror(int errnum);
  ]]
end

-- The copy of tide's C library that tide.core was loaded from: the tide
-- binary's own (linked with -Wl,-E, so its symbols are global), else the
-- tide/core.so that package.cpath finds (dlopen gives back the handle
-- require already holds).
local function tide_library()
  if pcall(function() return ffi.C.tide_ffi_layout end) then return ffi.C end
  local path = package.searchpath("tide.core", package.cpath)
  if path == nil then
    error("tide.ffi: tide/core.so is not on package.cpath (" .. package.cpath .. ")", 3)
  end
  return ffi.load(path)
end

M.lib = tide_library()

-- A stale or mismatched build is a programmer error: raise.
do
  local entry = M.lib.tide_ffi_layout()
  local i = 0
  while entry[i].type ~= nil do
    local e = entry[i]
    local ct, field, want = ffi.string(e.type), ffi.string(e.field), e.value
    local got = field == "" and ffi.sizeof(ct) or ffi.offsetof(ct, field)
    if got ~= want then
      error(string.format("tide.ffi: %s%s is %s in C but %s as declared in lua/tide/ffi.lua",
        ct, field == "" and "'s size" or "." .. field, tostring(want), tostring(got)), 2)
    end
    i = i + 1
  end
end

local ERROR = ffi.typeof("struct tide_error")
function M.new_error() return ERROR() end
function M.message(err) return ffi.string(err.message) end

function M.hostname()
  local buf = ffi.new("char[256]")
  return ffi.C.gethostname(buf, 255) == 0 and ffi.string(buf) or "host"
end

function M.pid() return ffi.C.getpid() end

local tv = ffi.new("struct tide_timeval")
function M.realtime_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + math.floor(tonumber(tv.tv_usec) / 1000)
end

local ts = ffi.new("struct tide_timespec")
local CLOCK_MONOTONIC = 1 -- Linux
function M.monotonic_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + math.floor(tonumber(ts.tv_nsec) / 1000000)
end

-- posix_spawn_file_actions_t is 80 bytes on glibc (x86_64 and arm64)
assert(ffi.sizeof("tide_spawn_actions_t") == 80, "tide.ffi: posix_spawn_file_actions_t layout")

local O_CLOEXEC, WNOHANG = 524288, 1

local function errno_message(what)
  return what .. ": " .. ffi.string(ffi.C.strerror(ffi.errno()))
end

function M.spawn(argv)
  local n = #argv
  local cargv = ffi.new("char *[?]", n + 1)
  local anchors = {}
  for i = 1, n do
    local s = ffi.new("char[?]", #argv[i] + 1, argv[i])
    anchors[i] = s
    cargv[i - 1] = s
  end
  cargv[n] = nil
  local fds = ffi.new("int[2]")
  if ffi.C.pipe2(fds, O_CLOEXEC) ~= 0 then return nil, errno_message("pipe2") end
  local fa = ffi.new("tide_spawn_actions_t")
  ffi.C.posix_spawn_file_actions_init(fa)
  ffi.C.posix_spawn_file_actions_addopen(fa, 0, "/dev/null", 0, 0)
  ffi.C.posix_spawn_file_actions_adddup2(fa, fds[1], 1)
  local pid = ffi.new("int[1]")
  local rc = ffi.C.posix_spawnp(pid, cargv[0], fa, nil, cargv, ffi.C.environ)
  ffi.C.posix_spawn_file_actions_destroy(fa)
  ffi.C.close(fds[1])
  if rc ~= 0 then
    ffi.C.close(fds[0])
    return nil, "cannot run " .. argv[1] .. ": " .. ffi.string(ffi.C.strerror(rc))
  end
  local _ = anchors
  return pid[0], fds[0]
end

function M.kill(pid, sig) return ffi.C.kill(pid, sig or 9) end

local ESRCH = 3
function M.alive(pid)
  return ffi.C.kill(pid, 0) == 0 or ffi.errno() ~= ESRCH
end

function M.waitpid(pid, nohang)
  local st = ffi.new("int[1]")
  local r = ffi.C.waitpid(pid, st, nohang and WNOHANG or 0)
  if r < 0 then return nil, errno_message("waitpid") end
  return r, st[0]
end

function M.close(fd) return ffi.C.close(fd) end

return M
