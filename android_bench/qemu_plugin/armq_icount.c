/*
 * armq_icount: a QEMU TCG plugin (API version 1, QEMU >= 4.2 user mode) that counts
 * guest instructions executed between begin/end markers issued by armq's
 * android_bench/runner.py --markers.
 *
 * Marker protocol (see runner.py): the guest calls
 *     fadvise64(fd, offset = 0x41524D51 ("ARMQ"), len = 1 (begin) | 2 (end), advice)
 * (aarch64 syscall 223). The plugin sees every syscall before QEMU executes it;
 * nothing else passes that offset, so start-up, imports and model loading
 * are excluded and each region is one inference.
 *
 * Counting: every translated block adds its instruction count when it runs.
 *   mode=inline (default): one inline add to a global counter - fastest, exact
 *                 while one guest thread runs at a time (runner --threads 1);
 *   mode=tb:      a callback per block into a per-vCPU counter - exact with
 *                 several guest threads, slower.
 *
 * Arguments: out=FILE (required), mode=inline|tb, sysno=N (default 223).
 * Output lines, one per event, flushed as they happen:
 *     armq-icount 1 mode=<mode> target=<arch>
 *     region <index> <instructions, all threads> own <instructions of the marking thread>
 *     total <instructions> regions <n> threads <max vcpus seen> unbalanced <n>
 *
 * Build: cc -shared -fPIC -O2 -I<qemu>/include/qemu -o armq_icount.so armq_icount.c
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARKER_OFFSET 0x41524D51ULL
#define MARKER_BEGIN 1
#define MARKER_END 2
#define MAX_VCPUS 1024

typedef struct {
    uint64_t n;
    char pad[56];            /* one cache line each: no false sharing between threads */
} counter_t;

static counter_t per_vcpu[MAX_VCPUS + 1];   /* last slot: overflow, shared */
static uint64_t inline_count;
static int use_inline = 1;
static int64_t marker_sysno = 223;
static FILE *out;
static uint64_t region_start;
static uint64_t region_start_own;
static unsigned int region_vcpu;
static int in_region;
static uint64_t regions;
static uint64_t unbalanced;
static unsigned int max_vcpu;

static uint64_t total_count(void)
{
    uint64_t t = 0;
    if (use_inline) {
        return __atomic_load_n(&inline_count, __ATOMIC_RELAXED);
    }
    for (unsigned int i = 0; i <= MAX_VCPUS; i++) {
        t += __atomic_load_n(&per_vcpu[i].n, __ATOMIC_RELAXED);
    }
    return t;
}

/* Instructions of one vCPU (the thread that issued the markers); tb mode only. */
static uint64_t own_count(unsigned int vcpu_index)
{
    if (use_inline) {
        return __atomic_load_n(&inline_count, __ATOMIC_RELAXED);
    }
    unsigned int i = vcpu_index < MAX_VCPUS ? vcpu_index : MAX_VCPUS;
    return __atomic_load_n(&per_vcpu[i].n, __ATOMIC_RELAXED);
}

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    unsigned int i = vcpu_index < MAX_VCPUS ? vcpu_index : MAX_VCPUS;
    uint64_t n = (uint64_t)(uintptr_t)udata;
    if (i == MAX_VCPUS) {
        __atomic_fetch_add(&per_vcpu[i].n, n, __ATOMIC_RELAXED);
    } else {
        per_vcpu[i].n += n;  /* only this vCPU's thread writes its slot */
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (use_inline) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                 &inline_count, n);
    } else {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
    }
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    if (vcpu_index + 1 > max_vcpu) {
        max_vcpu = vcpu_index + 1;
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                       uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                       uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != marker_sysno || a2 != MARKER_OFFSET) {
        return;
    }
    uint64_t now = total_count();
    if (a3 == MARKER_BEGIN) {
        if (in_region) {
            unbalanced++;
        }
        in_region = 1;
        region_start = now;
        region_vcpu = vcpu_index;
        region_start_own = own_count(vcpu_index);
    } else if (a3 == MARKER_END) {
        if (!in_region) {
            unbalanced++;
            return;
        }
        in_region = 0;
        fprintf(out, "region %" PRIu64 " %" PRIu64 " own %" PRIu64 "\n", regions,
                now - region_start, own_count(region_vcpu) - region_start_own);
        fflush(out);
        regions++;
    }
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    fprintf(out, "total %" PRIu64 " regions %" PRIu64 " threads %u unbalanced %" PRIu64 "\n",
            total_count(), regions, max_vcpu, unbalanced);
    fclose(out);
    out = NULL;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "out=", 4) == 0) {
            path = a + 4;
        } else if (strcmp(a, "mode=inline") == 0) {
            use_inline = 1;
        } else if (strcmp(a, "mode=tb") == 0) {
            use_inline = 0;
        } else if (strncmp(a, "sysno=", 6) == 0) {
            marker_sysno = strtoll(a + 6, NULL, 0);
        } else {
            fprintf(stderr, "armq_icount: unknown argument '%s'\n", a);
            return -1;
        }
    }
    if (info->system_emulation) {
        fprintf(stderr, "armq_icount: user-mode emulation only\n");
        return -1;
    }
    if (!path) {
        fprintf(stderr, "armq_icount: out=FILE is required\n");
        return -1;
    }
    out = fopen(path, "w");
    if (!out) {
        perror("armq_icount: cannot open out file");
        return -1;
    }
    fprintf(out, "armq-icount 1 mode=%s target=%s\n", use_inline ? "inline" : "tb",
            info->target_name);
    fflush(out);
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
