//! Safe handles on LibTorch's c10d objects (`csrc/distributed.cpp`, `csrc/nccl.cpp`): a
//! TCPStore client or server and a process group (Gloo, or NCCL where built).
//!
//! Every call returns LibTorch's message as a `String` on failure; [`super`] turns it into a
//! [`crate::ProcoError::Distributed`] naming the rank and, where it can, the rank at fault.

use std::ffi::{c_char, c_int, CStr, CString};
use std::time::Duration;

use tch::Tensor;
use torch_sys::C_tensor;

#[repr(C)]
struct RawStore {
    _private: [u8; 0],
}

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    fn proco_store_connect(host: *const c_char, port: u16, is_server: c_int, world: i64, timeout_ms: i64, message: *mut c_char, capacity: usize) -> *mut RawStore;
    fn proco_store_port(store: *const RawStore) -> u16;
    fn proco_store_set(store: *mut RawStore, key: *const c_char, value: *const u8, len: usize, message: *mut c_char, capacity: usize) -> c_int;
    fn proco_store_add(store: *mut RawStore, key: *const c_char, delta: i64, out: *mut i64, message: *mut c_char, capacity: usize) -> c_int;
    fn proco_store_check(store: *mut RawStore, key: *const c_char, message: *mut c_char, capacity: usize) -> c_int;
    fn proco_store_get(store: *mut RawStore, key: *const c_char, timeout_ms: i64, out: *mut u8, capacity_out: usize, message: *mut c_char, capacity: usize) -> i64;
    fn proco_store_free(store: *mut RawStore);
    fn proco_group_new_gloo(store: *mut RawStore, prefix: *const c_char, rank: c_int, world: c_int, timeout_ms: i64, message: *mut c_char, capacity: usize) -> *mut RawGroup;
    fn proco_group_new_nccl(store: *mut RawStore, prefix: *const c_char, rank: c_int, world: c_int, device: c_int, timeout_ms: i64, message: *mut c_char, capacity: usize) -> *mut RawGroup;
    fn proco_group_all_reduce(group: *mut RawGroup, tensors: *const *mut C_tensor, n: usize, op: c_int, message: *mut c_char, capacity: usize) -> c_int;
    fn proco_group_broadcast(group: *mut RawGroup, tensors: *const *mut C_tensor, n: usize, root: c_int, message: *mut c_char, capacity: usize) -> c_int;
    fn proco_group_barrier(group: *mut RawGroup, message: *mut c_char, capacity: usize) -> c_int;
    fn proco_group_free(group: *mut RawGroup);
}

/// A C++ message buffer.
const MESSAGE_CAPACITY: usize = 2048;

struct Message([c_char; MESSAGE_CAPACITY]);

impl Message {
    fn new() -> Self {
        Self([0; MESSAGE_CAPACITY])
    }

    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }

    fn text(&self) -> String {
        // SAFETY: the C++ side writes a NUL-terminated string within the buffer, and the last
        // byte is never written otherwise (it starts as NUL).
        unsafe { CStr::from_ptr(self.0.as_ptr()) }.to_string_lossy().into_owned()
    }
}

fn c_string(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("`{s}` contains a NUL byte"))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A reduction of an all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Elementwise sum.
    Sum,
    /// Elementwise maximum.
    Max,
    /// Elementwise minimum.
    Min,
}

/// A client of a c10d TCPStore (and, made with [`Store::serve`], the server as well): the
/// key-value rendezvous of torch.distributed.
pub struct Store {
    raw: *mut RawStore,
}

// SAFETY: the handle is used from one thread at a time (`&mut self` for every call); c10d's
// TCPStore client holds no thread-local state.
unsafe impl Send for Store {}

impl Store {
    /// Connects to the server at `host:port`, retrying until `timeout`.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self, String> {
        Self::open(host, port, false, 0, timeout)
    }

    /// Starts a server on `port` (0: a free port, see [`Store::port`]) for `world` clients,
    /// and connects to it.
    pub fn serve(host: &str, port: u16, world: usize, timeout: Duration) -> Result<Self, String> {
        Self::open(host, port, true, world as i64, timeout)
    }

    fn open(host: &str, port: u16, is_server: bool, world: i64, timeout: Duration) -> Result<Self, String> {
        let host = c_string(host)?;
        let mut m = Message::new();
        // SAFETY: valid NUL-terminated string and message buffer; returns an owned handle or null.
        let raw = unsafe { proco_store_connect(host.as_ptr(), port, c_int::from(is_server), world, millis(timeout), m.ptr(), MESSAGE_CAPACITY) };
        if raw.is_null() {
            return Err(m.text());
        }
        Ok(Self { raw })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        // SAFETY: `raw` is a live handle.
        unsafe { proco_store_port(self.raw) }
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        let key = c_string(key)?;
        let mut m = Message::new();
        // SAFETY: live handle, valid key, `value` readable for its length.
        let rc = unsafe { proco_store_set(self.raw, key.as_ptr(), value.as_ptr(), value.len(), m.ptr(), MESSAGE_CAPACITY) };
        if rc != 0 {
            return Err(m.text());
        }
        Ok(())
    }

    /// Adds `delta` to the counter `key` (0 when new) and returns its new value.
    pub fn add(&mut self, key: &str, delta: i64) -> Result<i64, String> {
        let key = c_string(key)?;
        let mut m = Message::new();
        let mut out = 0i64;
        // SAFETY: live handle, valid key, `out` writable.
        let rc = unsafe { proco_store_add(self.raw, key.as_ptr(), delta, &mut out, m.ptr(), MESSAGE_CAPACITY) };
        if rc != 0 {
            return Err(m.text());
        }
        Ok(out)
    }

    /// Whether `key` is set.
    pub fn check(&mut self, key: &str) -> Result<bool, String> {
        let key = c_string(key)?;
        let mut m = Message::new();
        // SAFETY: live handle and valid key.
        match unsafe { proco_store_check(self.raw, key.as_ptr(), m.ptr(), MESSAGE_CAPACITY) } {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(m.text()),
        }
    }

    /// The value of `key`, waiting up to `timeout` for it to be set.
    pub fn get(&mut self, key: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        let ckey = c_string(key)?;
        let mut buf = vec![0u8; 256];
        loop {
            let mut m = Message::new();
            // SAFETY: live handle, valid key, `buf` writable for its length.
            let n = unsafe { proco_store_get(self.raw, ckey.as_ptr(), millis(timeout), buf.as_mut_ptr(), buf.len(), m.ptr(), MESSAGE_CAPACITY) };
            if n < 0 {
                return Err(m.text());
            }
            let n = n as usize;
            if n <= buf.len() {
                buf.truncate(n);
                return Ok(buf);
            }
            buf = vec![0u8; n];
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `raw` is owned by this handle and freed once.
        unsafe { proco_store_free(self.raw) }
    }
}

/// Which collective library carries the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors, TCP.
    Gloo,
    /// NCCL: CUDA tensors on this rank's GPU.
    Nccl {
        /// The rank's CUDA device index.
        device: usize,
    },
}

/// A c10d process group: every rank calls the same collectives in the same order with
/// tensors of the same shapes.
pub struct ProcessGroup {
    raw: *mut RawGroup,
}

// SAFETY: as for `Store`: one caller at a time through `&mut self`.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group of `world` ranks as `rank` over `store`, its keys under `prefix`;
    /// collectives fail after `timeout`.
    pub fn new(store: &mut Store, prefix: &str, backend: Backend, rank: usize, world: usize, timeout: Duration) -> Result<Self, String> {
        let prefix = c_string(prefix)?;
        let mut m = Message::new();
        let (rank, world) = (rank as c_int, world as c_int);
        // SAFETY: live store handle (the group takes its own reference), valid strings and buffer.
        let raw = unsafe {
            match backend {
                Backend::Gloo => proco_group_new_gloo(store.raw, prefix.as_ptr(), rank, world, millis(timeout), m.ptr(), MESSAGE_CAPACITY),
                Backend::Nccl { device } => proco_group_new_nccl(store.raw, prefix.as_ptr(), rank, world, device as c_int, millis(timeout), m.ptr(), MESSAGE_CAPACITY),
            }
        };
        if raw.is_null() {
            return Err(m.text());
        }
        Ok(Self { raw })
    }

    /// All-reduces each tensor in place (all collectives are started, then awaited).
    pub fn all_reduce(&mut self, tensors: &mut [Tensor], op: ReduceOp) -> Result<(), String> {
        let ptrs: Vec<*mut C_tensor> = tensors.iter_mut().map(|t| t.as_mut_ptr()).collect();
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        let mut m = Message::new();
        // SAFETY: live group; `ptrs` are live tensors borrowed mutably for the call.
        let rc = unsafe { proco_group_all_reduce(self.raw, ptrs.as_ptr(), ptrs.len(), op, m.ptr(), MESSAGE_CAPACITY) };
        if rc != 0 {
            return Err(m.text());
        }
        Ok(())
    }

    /// Overwrites each tensor with rank `root`'s.
    pub fn broadcast(&mut self, tensors: &mut [Tensor], root: usize) -> Result<(), String> {
        let ptrs: Vec<*mut C_tensor> = tensors.iter_mut().map(|t| t.as_mut_ptr()).collect();
        let mut m = Message::new();
        // SAFETY: as in `all_reduce`.
        let rc = unsafe { proco_group_broadcast(self.raw, ptrs.as_ptr(), ptrs.len(), root as c_int, m.ptr(), MESSAGE_CAPACITY) };
        if rc != 0 {
            return Err(m.text());
        }
        Ok(())
    }

    /// Waits until every rank has reached this call.
    pub fn barrier(&mut self) -> Result<(), String> {
        let mut m = Message::new();
        // SAFETY: live group and buffer.
        let rc = unsafe { proco_group_barrier(self.raw, m.ptr(), MESSAGE_CAPACITY) };
        if rc != 0 {
            return Err(m.text());
        }
        Ok(())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` is owned by this handle and freed once.
        unsafe { proco_group_free(self.raw) }
    }
}
