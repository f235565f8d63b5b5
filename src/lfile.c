/* Files: capture tails and reads, sizes, directories, ownership, and a
 * close-on-exec file for Lua. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static int l_tail(lua_State *L)
{
    char *t = mkh_tail_file(luaL_checkstring(L, 1), (int)luaL_optinteger(L, 2, 20), 65536);
    if (!t) return 0;
    lua_pushstring(L, t);
    free(t);
    return 1;
}


/* core.read(path[, offset]) -> contents from offset, or nil, err */
static int l_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    off_t off = (off_t)luaL_optinteger(L, 2, 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lmkh_push_errno(L, path);
    struct stat st;
    fstat(fd, &st);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char *chunk;
    ssize_t n;
    for (;;) {
        chunk = luaL_prepbuffsize(&b, 1 << 16);
        n = pread(fd, chunk, 1 << 16, off);
        if (n <= 0) break;
        luaL_addsize(&b, (size_t)n);
        off += n;
    }
    close(fd);
    luaL_pushresult(&b);
    return 1;
}


static int l_size(lua_State *L)
{
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0) {
        if (errno == ENOENT) return 0;
        /* not "missing" (a directory on the way we may not search): say why */
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 3;
    }
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory"
                    : S_ISSOCK(st.st_mode) ? "socket" : "other");
    return 2;
}


/* core.fs_full(path) -> true when the filesystem holding path has no block
 * or no inode left for an unprivileged writer (a service's ENOSPC) */
static int l_fs_full(lua_State *L)
{
    struct statvfs sv;
    if (statvfs(luaL_checkstring(L, 1), &sv) != 0) return 0;
    lua_pushboolean(L, sv.f_bavail == 0 || (sv.f_files > 0 && sv.f_favail == 0));
    return 1;
}


static int l_mkdir(lua_State *L)
{
    char err[512];
    if (mkh_mkdir_p(luaL_checkstring(L, 1), err, sizeof err) != 0) return lmkh_push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}


/* core.ids(user, group): either may be nil, a name or a number ->
 * { uid=, gid=, groups = {...}, user=, group=, home= }, or nil, message,
 * "user" or "group" (which one is wrong) */
static int l_ids(lua_State *L)
{
    const char *user = lua_isnoneornil(L, 1) ? NULL : luaL_checkstring(L, 1);
    const char *group = lua_isnoneornil(L, 2) ? NULL : luaL_checkstring(L, 2);
    mkh_ids ids;
    const char *which;
    char err[512];
    if (mkh_ids_resolve(user, group, &ids, &which, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushstring(L, which);
        return 3;
    }
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, ids.uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, ids.gid);
    lua_setfield(L, -2, "gid");
    lua_createtable(L, (int)ids.ngroups, 0);
    for (size_t i = 0; i < ids.ngroups; i++) {
        lua_pushinteger(L, ids.groups[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "groups");
    lua_pushstring(L, ids.user);
    lua_setfield(L, -2, "user");
    lua_pushstring(L, ids.group);
    lua_setfield(L, -2, "group");
    lua_pushstring(L, ids.home);
    lua_setfield(L, -2, "home");
    mkh_ids_free(&ids);
    return 1;
}


/* core.chown(path, uid, gid) / core.chmod(path, mode) -> true, or nil,
 * message, errno. chown does not follow a symbolic link (Linux cannot chmod
 * a link itself: both are for paths the harness made) */
static int l_chown(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uid_t uid = (uid_t)luaL_checkinteger(L, 2);
    gid_t gid = (gid_t)luaL_checkinteger(L, 3);
    return luaL_fileresult(L, lchown(path, uid, gid) == 0, path);
}


static int l_chmod(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer mode = luaL_checkinteger(L, 2);
    luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode must be 0 to 07777");
    return luaL_fileresult(L, fchmodat(AT_FDCWD, path, (mode_t)mode, 0) == 0, path);
}


static int l_rmtree(lua_State *L)
{
    mkh_rmtree(luaL_checkstring(L, 1));
    return 0;
}


/* fclose for files made by l_open_file; liolib calls it as closef. */
static int file_close(lua_State *L)
{
    luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
    return luaL_fileresult(L, fclose(p->f) == 0, NULL);
}


/* open_file(path [, "w"|"a" [, perms]]) -> a Lua file for writing, like
 * io.open but close-on-exec from the open on: io.open's fd would be
 * inherited by every os.execute and io.popen child. perms (default 0666,
 * less the umask) apply when the file is created. Failure: nil, message,
 * errno. */
static int l_open_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *mode = luaL_optstring(L, 2, "w");
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
    if (!strcmp(mode, "w")) flags |= O_TRUNC;
    else if (!strcmp(mode, "a")) flags |= O_APPEND;
    else return luaL_argerror(L, 2, "mode must be \"w\" or \"a\"");
    lua_Integer perms = luaL_optinteger(L, 3, 0666);
    luaL_argcheck(L, perms >= 0 && perms <= 0777, 3, "perms must be 0 to 0777");
    luaL_Stream *p = (luaL_Stream *)lua_newuserdatauv(L, sizeof *p, 0);
    p->f = NULL;
    p->closef = NULL; /* counts as closed until open: __gc then does nothing */
    luaL_setmetatable(L, LUA_FILEHANDLE);
    int fd = open(path, flags, (mode_t)perms);
    if (fd < 0) return luaL_fileresult(L, 0, path);
    p->f = fdopen(fd, mode);
    if (!p->f) {
        int e = errno;
        close(fd);
        errno = e;
        return luaL_fileresult(L, 0, path);
    }
    p->closef = file_close;
    return 1;
}

void lmkh_open_file(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"tail", l_tail},
        {"read", l_read},
        {"size", l_size},
        {"fs_full", l_fs_full},
        {"mkdir", l_mkdir},
        {"rmtree", l_rmtree},
        {"open_file", l_open_file},
        {"ids", l_ids},
        {"chown", l_chown},
        {"chmod", l_chmod},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
