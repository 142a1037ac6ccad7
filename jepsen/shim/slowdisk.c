/*
 * The slow-disk nemesis's LD_PRELOAD shim (built by `jepsen run` with `cc -shared -fPIC ... -ldl` when
 * `slow-disk` is in the schedule; jepsen/README.md). Interposes the libc calls a node's storage (sled)
 * makes durable or writes with: fsync, fdatasync, sync_file_range, write, pwrite, pwrite64, writev,
 * pwritev. A call on a file under $TOLLGATE_SLOWDISK_DIR (the node's data directory, resolved through
 * /proc/self/fd) sleeps first, while the control file $TOLLGATE_SLOWDISK_CONTROL exists and reads
 * "SYNC_MS WRITE_MS": SYNC_MS before each sync call, WRITE_MS before each write. No control file: no delay.
 * Every delayed call is counted in "$TOLLGATE_SLOWDISK_CONTROL.stats" ("syncs N writes M slept_ms T").
 * The call itself always runs, with its own result and errno: the disk is slow, never wrong.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static unsigned long delayed_syncs, delayed_writes, slept_ms;

static int under_data_dir(int fd) {
    const char *dir = getenv("TOLLGATE_SLOWDISK_DIR");
    if (dir == NULL || *dir == '\0' || fd < 0) return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = '\0';
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    return strncmp(path, dir, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

/* The delays the control file asks for (0, 0 when it is absent or unreadable). */
static void read_control(long *sync_ms, long *write_ms) {
    *sync_ms = 0;
    *write_ms = 0;
    const char *control = getenv("TOLLGATE_SLOWDISK_CONTROL");
    if (control == NULL) return;
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char text[64];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return;
    text[n] = '\0';
    if (sscanf(text, "%ld %ld", sync_ms, write_ms) < 1) *sync_ms = 0;
}

static ssize_t (*real_write)(int, const void *, size_t);

static void write_stats(void) {
    const char *control = getenv("TOLLGATE_SLOWDISK_CONTROL");
    if (control == NULL || real_write == NULL) return;
    char path[PATH_MAX], text[128];
    snprintf(path, sizeof path, "%s.stats", control);
    int len = snprintf(text, sizeof text, "syncs %lu writes %lu slept_ms %lu\n", delayed_syncs, delayed_writes,
                       slept_ms);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    (void)real_write(fd, text, (size_t)len);
    close(fd);
}

static void slow_down(int fd, int is_sync) {
    if (!under_data_dir(fd)) return;
    int saved = errno;
    long sync_ms, write_ms;
    read_control(&sync_ms, &write_ms);
    long ms = is_sync ? sync_ms : write_ms;
    if (ms > 0) {
        struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&left, &left) == -1 && errno == EINTR) {
        }
        /* Racy counters (calls from several threads): evidence, not accounting. */
        if (is_sync) delayed_syncs++; else delayed_writes++;
        slept_ms += (unsigned long)ms;
        write_stats();
    }
    errno = saved;
}

/* The next definition of `fn` (libc's), looked up once. */
#define REAL(fn) \
    static __typeof__(&fn) real; \
    if (real == NULL) real = (__typeof__(&fn))dlsym(RTLD_NEXT, #fn)

int fsync(int fd) {
    REAL(fsync);
    slow_down(fd, 1);
    return real(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    slow_down(fd, 1);
    return real(fd);
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    REAL(sync_file_range);
    slow_down(fd, 1);
    return real(fd, offset, nbytes, flags);
}

ssize_t write(int fd, const void *buf, size_t count) {
    if (real_write == NULL) real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    slow_down(fd, 0);
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite);
    slow_down(fd, 0);
    return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    REAL(pwrite64);
    slow_down(fd, 0);
    return real(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    REAL(writev);
    slow_down(fd, 0);
    return real(fd, iov, iovcnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    REAL(pwritev);
    slow_down(fd, 0);
    return real(fd, iov, iovcnt, offset);
}
