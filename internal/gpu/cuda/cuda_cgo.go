//go:build linux && cgo

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The few driver API types and entry points used, declared here so that
// no CUDA header is needed to build.
typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef unsigned long long CUdeviceptr;
typedef struct { char bytes[16]; } CUuuid;

static CUresult (*p_cuInit)(unsigned int);
static CUresult (*p_cuDriverGetVersion)(int *);
static CUresult (*p_cuDeviceGetCount)(int *);
static CUresult (*p_cuDeviceGet)(CUdevice *, int);
static CUresult (*p_cuDeviceGetName)(char *, int, CUdevice);
static CUresult (*p_cuDeviceGetUuid)(CUuuid *, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRelease)(CUdevice);
static CUresult (*p_cuModuleUnload)(CUmodule);
static CUresult (*p_cuCtxSetCurrent)(CUcontext);
static CUresult (*p_cuCtxSynchronize)(void);
static CUresult (*p_cuModuleLoadDataEx)(CUmodule *, const void *, unsigned int, int *, void **);
static CUresult (*p_cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*p_cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*p_cuMemFree)(CUdeviceptr);
static CUresult (*p_cuMemsetD32)(CUdeviceptr, unsigned int, size_t);
static CUresult (*p_cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
static CUresult (*p_cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int,
	unsigned int, unsigned int, unsigned int, unsigned int, void *, void **, void **);
static CUresult (*p_cuGetErrorString)(CUresult, const char **);

// gm_load opens libcuda and finds every entry point; on failure it writes
// why into err and returns -1.
static int gm_load(char *err, size_t errlen) {
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror(); // the first error says more than the fallback's
		snprintf(err, errlen, "%s", e ? e : "libcuda.so.1 not found");
		lib = dlopen("libcuda.so", RTLD_NOW | RTLD_LOCAL);
		if (!lib) return -1;
	}
#define GM_SYM(var, name) do { *(void **)(&var) = dlsym(lib, name); \
	if (!var) { snprintf(err, errlen, "libcuda has no %s (driver too old?)", name); return -1; } } while (0)
	GM_SYM(p_cuInit, "cuInit");
	GM_SYM(p_cuDriverGetVersion, "cuDriverGetVersion");
	GM_SYM(p_cuDeviceGetCount, "cuDeviceGetCount");
	GM_SYM(p_cuDeviceGet, "cuDeviceGet");
	GM_SYM(p_cuDeviceGetName, "cuDeviceGetName");
	GM_SYM(p_cuDeviceGetUuid, "cuDeviceGetUuid");
	GM_SYM(p_cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
	*(void **)(&p_cuDevicePrimaryCtxRelease) = dlsym(lib, "cuDevicePrimaryCtxRelease_v2"); // CUDA 11+
	if (!p_cuDevicePrimaryCtxRelease) GM_SYM(p_cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease");
	GM_SYM(p_cuModuleUnload, "cuModuleUnload");
	GM_SYM(p_cuCtxSetCurrent, "cuCtxSetCurrent");
	GM_SYM(p_cuCtxSynchronize, "cuCtxSynchronize");
	GM_SYM(p_cuModuleLoadDataEx, "cuModuleLoadDataEx");
	GM_SYM(p_cuModuleGetFunction, "cuModuleGetFunction");
	GM_SYM(p_cuMemAlloc, "cuMemAlloc_v2");
	GM_SYM(p_cuMemFree, "cuMemFree_v2");
	GM_SYM(p_cuMemsetD32, "cuMemsetD32_v2");
	GM_SYM(p_cuMemcpyDtoH, "cuMemcpyDtoH_v2");
	GM_SYM(p_cuLaunchKernel, "cuLaunchKernel");
	GM_SYM(p_cuGetErrorString, "cuGetErrorString");
#undef GM_SYM
	return 0;
}

static const char *gm_error(CUresult r) {
	const char *s = NULL;
	if (p_cuGetErrorString && p_cuGetErrorString(r, &s) == 0 && s) return s;
	return "unknown CUDA error";
}

static CUresult gm_init(void) { return p_cuInit(0); }
static CUresult gm_driver_version(int *v) { return p_cuDriverGetVersion(v); }
static CUresult gm_device_count(int *n) { return p_cuDeviceGetCount(n); }

static CUresult gm_device(int ordinal, CUdevice *dev, char *name, int namelen, unsigned char *uuid) {
	CUresult r = p_cuDeviceGet(dev, ordinal);
	if (r) return r;
	if ((r = p_cuDeviceGetName(name, namelen, *dev))) return r;
	CUuuid u;
	if ((r = p_cuDeviceGetUuid(&u, *dev))) return r;
	memcpy(uuid, u.bytes, 16);
	return 0;
}

// gm_context retains the device's primary context and makes it current;
// on failure nothing stays retained.
static CUresult gm_context(CUdevice dev) {
	CUcontext ctx;
	CUresult r = p_cuDevicePrimaryCtxRetain(&ctx, dev);
	if (r) return r;
	if ((r = p_cuCtxSetCurrent(ctx))) p_cuDevicePrimaryCtxRelease(dev);
	return r;
}

static CUresult gm_release(CUdevice dev) { return p_cuDevicePrimaryCtxRelease(dev); }
static CUresult gm_sync(void) { return p_cuCtxSynchronize(); }

// gm_module loads the PTX (the driver compiles it for the card) and finds
// both kernels; a compile error goes to log.
static CUresult gm_module(const char *ptx, CUmodule *mod, CUfunction *inputs, CUfunction *tiles, CUfunction *tile128, char *log, size_t loglen) {
	int opts[2] = {5, 6}; // CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
	void *vals[2] = {log, (void *)(size_t)loglen};
	CUresult r = p_cuModuleLoadDataEx(mod, ptx, 2, opts, vals);
	if (r) return r;
	if (!(r = p_cuModuleGetFunction(inputs, *mod, "gm_inputs")) &&
	    !(r = p_cuModuleGetFunction(tiles, *mod, "gm_tiles")) &&
	    !(r = p_cuModuleGetFunction(tile128, *mod, "gm_tile128"))) return 0;
	p_cuModuleUnload(*mod);
	return r;
}

static CUresult gm_unload(CUmodule mod) { return p_cuModuleUnload(mod); }

static CUresult gm_alloc(CUdeviceptr *p, size_t n) { return p_cuMemAlloc(p, n); }
static CUresult gm_free(CUdeviceptr p) { return p_cuMemFree(p); }
static CUresult gm_memset32(CUdeviceptr p, unsigned int v, size_t n) { return p_cuMemsetD32(p, v, n); }
static CUresult gm_copy_out(void *dst, CUdeviceptr src, size_t n) { return p_cuMemcpyDtoH(dst, src, n); }

static CUresult gm_launch_inputs(CUfunction f, unsigned int gx, unsigned int bx, CUdeviceptr out, unsigned int key,
		unsigned int key2, unsigned int tile0, unsigned int n2, unsigned int total) {
	void *args[] = {&out, &key, &key2, &tile0, &n2, &total};
	return p_cuLaunchKernel(f, gx, 1, 1, bx, 1, 1, 0, NULL, args, NULL);
}

static CUresult gm_launch_tiles(CUfunction f, unsigned int gx, unsigned int gy, unsigned int bx, CUdeviceptr a,
		CUdeviceptr b, CUdeviceptr d, unsigned int n, unsigned int k4, unsigned int k5) {
	void *args[] = {&a, &b, &d, &n, &k4, &k5};
	return p_cuLaunchKernel(f, gx, gy, 1, bx, 1, 1, 0, NULL, args, NULL);
}

static CUresult gm_launch_tile128(CUfunction f, unsigned int gx, unsigned int bx, CUdeviceptr d, unsigned int tile0,
		unsigned int k0, unsigned int k1, unsigned int k2, unsigned int k3, unsigned int k4, unsigned int k5) {
	void *args[] = {&d, &tile0, &k0, &k1, &k2, &k3, &k4, &k5};
	return p_cuLaunchKernel(f, gx, 1, 1, bx, 1, 1, 0, NULL, args, NULL);
}
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/gpumarket/gpumarket/internal/verify"
)

var (
	loadOnce sync.Once
	loadErr  error
	ptxOnce  sync.Once
	ptx      *C.char // the kernels' PTX
)

func check(op string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s (CUDA error %d)", op, C.GoString(C.gm_error(r)), int(r))
}

// Open loads the CUDA driver and self-tests every GPU (see the package
// comment). GPUs that fail are listed
// by Failed and left to fallback, which also takes every task of a GPU
// the driver does not show (fake GPUs).
func Open(ctx context.Context, fallback verify.Solver) (*Solver, error) {
	loadOnce.Do(func() {
		var buf [512]C.char
		if C.gm_load(&buf[0], C.size_t(len(buf))) != 0 {
			loadErr = fmt.Errorf("%w: %s", ErrUnavailable, C.GoString(&buf[0]))
			return
		}
		loadErr = check("cuInit", C.gm_init())
	})
	if loadErr != nil {
		return nil, loadErr
	}
	var count C.int
	if err := check("cuDeviceGetCount", C.gm_device_count(&count)); err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, errNoGPU
	}
	ptxOnce.Do(func() { ptx = C.CString(PTX()) }) // kept for the process's life
	var devs []*device
	failed := map[string]error{}
	for i := range int(count) {
		d, err := openDevice(i)
		if err != nil {
			failed[fmt.Sprintf("CUDA device %d", i)] = err
			continue
		}
		devs = append(devs, d)
	}
	s := newSolver(ctx, devs, fallback, batchEntries)
	for k, v := range failed {
		s.failed[k] = v
	}
	return s, nil
}

// DriverVersion returns the CUDA driver's version, as "12.4", or
// "unknown" with the error.
func DriverVersion() (string, error) {
	var v C.int
	if err := check("cuDriverGetVersion", C.gm_driver_version(&v)); err != nil {
		return "unknown", err
	}
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10), nil
}

// cgoDriver is one GPU's context, current on the calling thread, with the
// kernels loaded.
type cgoDriver struct {
	inputs, tiles, tile128 C.CUfunction
}

// openDevice finds device ordinal i's name and UUID. Its context exists
// only while a solve runs (run): a context held for the agent's life would
// keep hundreds of MiB of the GPU's memory from its renters, and a GPU in
// exclusive-process mode from their workloads altogether. The driver
// caches the compiled kernels, so loading them again costs little.
func openDevice(i int) (*device, error) {
	var dev C.CUdevice
	var name [256]C.char
	var id [16]C.uchar
	if err := check("cuDeviceGet", C.gm_device(C.int(i), &dev, &name[0], C.int(len(name)), &id[0])); err != nil {
		return nil, err
	}
	d := &device{uuid: formatUUID(C.GoBytes(unsafe.Pointer(&id[0]), 16)), name: C.GoString(&name[0])}
	d.run = func(f func(driver) error) error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := check("cuDevicePrimaryCtxRetain", C.gm_context(dev)); err != nil {
			return err
		}
		defer C.gm_release(dev)
		var mod C.CUmodule
		drv := &cgoDriver{}
		var log [4096]C.char
		if err := check("load the challenge kernels", C.gm_module(ptx, &mod, &drv.inputs, &drv.tiles, &drv.tile128, &log[0], C.size_t(len(log)))); err != nil {
			if msg := C.GoString(&log[0]); msg != "" {
				err = fmt.Errorf("%w: %s", err, msg)
			}
			return err
		}
		defer C.gm_unload(mod)
		return f(drv)
	}
	return d, nil
}

// formatUUID writes a CUDA UUID as NVML and nvidia-smi do.
func formatUUID(b []byte) string {
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (c *cgoDriver) alloc(bytes int) (uint64, error) {
	var p C.CUdeviceptr
	if err := check(fmt.Sprintf("cuMemAlloc (%d MiB)", bytes>>20), C.gm_alloc(&p, C.size_t(bytes))); err != nil {
		return 0, err
	}
	return uint64(p), nil
}

func (c *cgoDriver) free(p uint64) { C.gm_free(C.CUdeviceptr(p)) }

func (c *cgoDriver) memsetD32(p uint64, v uint32, n int) error {
	return check("cuMemsetD32", C.gm_memset32(C.CUdeviceptr(p), C.uint(v), C.size_t(n)))
}

func (c *cgoDriver) launch(kernel string, grid [2]uint32, args ...any) error {
	var r C.CUresult
	switch kernel {
	case "gm_inputs":
		r = C.gm_launch_inputs(c.inputs, C.uint(grid[0]), Block, C.CUdeviceptr(args[0].(uint64)),
			C.uint(args[1].(uint32)), C.uint(args[2].(uint32)), C.uint(args[3].(uint32)), C.uint(args[4].(uint32)), C.uint(args[5].(uint32)))
	case "gm_tiles":
		r = C.gm_launch_tiles(c.tiles, C.uint(grid[0]), C.uint(grid[1]), Block, C.CUdeviceptr(args[0].(uint64)), C.CUdeviceptr(args[1].(uint64)),
			C.CUdeviceptr(args[2].(uint64)), C.uint(args[3].(uint32)), C.uint(args[4].(uint32)), C.uint(args[5].(uint32)))
	case "gm_tile128":
		u := func(i int) C.uint { return C.uint(args[i].(uint32)) }
		r = C.gm_launch_tile128(c.tile128, C.uint(grid[0]), Block, C.CUdeviceptr(args[0].(uint64)), u(1), u(2), u(3), u(4), u(5), u(6), u(7))
	default:
		return fmt.Errorf("no kernel %s", kernel)
	}
	return check("launch "+kernel, r)
}

func (c *cgoDriver) sync() error { return check("cuCtxSynchronize", C.gm_sync()) }

func (c *cgoDriver) copyOut(dst []uint32, src uint64) error {
	if len(dst) == 0 {
		return nil
	}
	return check("cuMemcpyDtoH", C.gm_copy_out(unsafe.Pointer(&dst[0]), C.CUdeviceptr(src), C.size_t(4*len(dst))))
}
