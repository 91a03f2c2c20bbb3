//! A safe wrapper around one PAM transaction and its conversation callback.

use std::ffi::{CStr, CString, c_int, c_void};

use super::ffi::{self, Lib, PamConv, PamHandle, PamMessage, PamResponse};

/// One message PAM wants shown or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Ask, without echo (a password).
    Secret(String),
    /// Ask, with echo.
    Visible(String),
    Info(String),
    Error(String),
}

impl Prompt {
    pub fn wants_answer(&self) -> bool {
        matches!(self, Prompt::Secret(_) | Prompt::Visible(_))
    }
}

/// Answers PAM's questions. Returns one answer per prompt that wants one, in order;
/// `None` aborts the conversation.
pub trait Conversation: Send {
    fn converse(&mut self, prompts: &[Prompt]) -> Option<Vec<String>>;
}

struct ConvState {
    conv: Box<dyn Conversation>,
}

/// One `pam_start` .. `pam_end` transaction.
pub struct Pam {
    lib: &'static Lib,
    handle: *mut PamHandle,
    // Boxed so its address, given to PAM as appdata, never moves.
    _conv: Box<ConvState>,
    _pam_conv: Box<PamConv>,
    last: c_int,
}

// SAFETY: a PAM handle may move between threads as long as one thread uses it at a
// time, which `&mut self` on every call guarantees.
unsafe impl Send for Pam {}

/// A PAM call that failed, with PAM's own words for it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {text}")]
pub struct PamError {
    pub what: &'static str,
    pub code: c_int,
    pub text: String,
}

fn cstring(s: &str) -> Result<CString, PamError> {
    CString::new(s).map_err(|_| PamError {
        what: "argument",
        code: ffi::PAM_CONV_ERR,
        text: "contains NUL".into(),
    })
}

impl Pam {
    pub fn start(service: &str, user: &str, conv: Box<dyn Conversation>) -> Result<Pam, PamError> {
        let lib = ffi::lib().map_err(|text| PamError {
            what: "pam_start",
            code: -1,
            text,
        })?;
        let mut state = Box::new(ConvState { conv });
        let pam_conv = Box::new(PamConv {
            conv: converse,
            appdata_ptr: (&mut *state as *mut ConvState).cast::<c_void>(),
        });
        let service = cstring(service)?;
        let user = cstring(user)?;
        let mut handle: *mut PamHandle = std::ptr::null_mut();
        // SAFETY: valid C strings, a conv struct that outlives the handle, and an
        // out-pointer for the handle.
        let r = unsafe { (lib.start)(service.as_ptr(), user.as_ptr(), &*pam_conv, &mut handle) };
        if r != ffi::PAM_SUCCESS || handle.is_null() {
            return Err(PamError {
                what: "pam_start",
                code: r,
                text: format!("error {r}"),
            });
        }
        Ok(Pam {
            lib,
            handle,
            _conv: state,
            _pam_conv: pam_conv,
            last: ffi::PAM_SUCCESS,
        })
    }

    fn check(&mut self, what: &'static str, r: c_int) -> Result<(), PamError> {
        self.last = r;
        if r == ffi::PAM_SUCCESS {
            Ok(())
        } else {
            Err(PamError {
                what,
                code: r,
                text: self.strerror(r),
            })
        }
    }

    pub fn strerror(&self, code: c_int) -> String {
        // SAFETY: pam_strerror returns a static or handle-owned string.
        unsafe {
            let p = (self.lib.strerror)(self.handle, code);
            if p.is_null() {
                format!("error {code}")
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    pub fn set_item(&mut self, item: c_int, value: &str) -> Result<(), PamError> {
        let v = cstring(value)?;
        // SAFETY: PAM copies string items.
        let r = unsafe { (self.lib.set_item)(self.handle, item, v.as_ptr().cast()) };
        self.check("pam_set_item", r)
    }

    pub fn authenticate(&mut self, flags: c_int) -> Result<(), PamError> {
        // SAFETY: valid handle.
        let r = unsafe { (self.lib.authenticate)(self.handle, flags) };
        self.check("pam_authenticate", r)
    }

    pub fn acct_mgmt(&mut self, flags: c_int) -> Result<(), PamError> {
        // SAFETY: valid handle.
        let r = unsafe { (self.lib.acct_mgmt)(self.handle, flags) };
        self.check("pam_acct_mgmt", r)
    }

    pub fn setcred(&mut self, flags: c_int) -> Result<(), PamError> {
        // SAFETY: valid handle.
        let r = unsafe { (self.lib.setcred)(self.handle, flags) };
        self.check("pam_setcred", r)
    }

    pub fn open_session(&mut self) -> Result<(), PamError> {
        // SAFETY: valid handle.
        let r = unsafe { (self.lib.open_session)(self.handle, 0) };
        self.check("pam_open_session", r)
    }

    pub fn close_session(&mut self) -> Result<(), PamError> {
        // SAFETY: valid handle.
        let r = unsafe { (self.lib.close_session)(self.handle, 0) };
        self.check("pam_close_session", r)
    }

    /// The environment PAM modules set (pam_env, pam_systemd's XDG_*), freed here.
    pub fn env(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // SAFETY: getenvlist returns a NULL-terminated malloc'd array of malloc'd
        // strings that the caller frees.
        unsafe {
            let list = (self.lib.getenvlist)(self.handle);
            if list.is_null() {
                return out;
            }
            let mut i = 0;
            loop {
                let p = *list.add(i);
                if p.is_null() {
                    break;
                }
                let s = CStr::from_ptr(p).to_string_lossy().into_owned();
                if let Some((k, v)) = s.split_once('=') {
                    out.push((k.to_string(), v.to_string()));
                }
                libc::free(p.cast());
                i += 1;
            }
            libc::free(list.cast());
        }
        out
    }
}

impl Drop for Pam {
    fn drop(&mut self) {
        // SAFETY: the handle came from pam_start and is ended once.
        unsafe { (self.lib.end)(self.handle, self.last) };
    }
}

/// The C conversation callback: collects PAM's messages, asks the Rust
/// conversation, and hands back malloc'd answers as PAM requires.
unsafe extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if num_msg <= 0 || num_msg > 64 || msg.is_null() || resp.is_null() || appdata.is_null() {
        return ffi::PAM_CONV_ERR;
    }
    let n = num_msg as usize;
    let mut prompts = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of `n` message pointers.
        let m = unsafe { *msg.add(i) };
        if m.is_null() {
            return ffi::PAM_CONV_ERR;
        }
        // SAFETY: each message has a style and a NUL-terminated text.
        let (style, text) = unsafe {
            let m = &*m;
            let text = if m.msg.is_null() {
                String::new()
            } else {
                CStr::from_ptr(m.msg).to_string_lossy().into_owned()
            };
            (m.msg_style, text)
        };
        prompts.push(match style {
            ffi::PAM_PROMPT_ECHO_OFF => Prompt::Secret(text),
            ffi::PAM_PROMPT_ECHO_ON => Prompt::Visible(text),
            ffi::PAM_ERROR_MSG => Prompt::Error(text),
            ffi::PAM_TEXT_INFO => Prompt::Info(text),
            _ => return ffi::PAM_CONV_ERR,
        });
    }
    // SAFETY: appdata is the ConvState box given to pam_start, alive for the handle.
    let state = unsafe { &mut *(appdata as *mut ConvState) };
    let answers = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        state.conv.converse(&prompts)
    })) {
        Ok(Some(a)) => a,
        _ => return ffi::PAM_CONV_ERR,
    };
    // SAFETY: calloc'd array of `n` responses, owned by PAM afterwards.
    let arr = unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    if arr.is_null() {
        return ffi::PAM_CONV_ERR;
    }
    let mut answers = answers.into_iter();
    for (i, p) in prompts.iter().enumerate() {
        if !p.wants_answer() {
            continue;
        }
        let a = answers.next().unwrap_or_default();
        let Ok(c) = CString::new(a) else {
            // SAFETY: free what was allocated so far.
            unsafe { free_responses(arr, n) };
            return ffi::PAM_CONV_ERR;
        };
        // SAFETY: strdup into PAM-owned memory; `arr` has `n` slots.
        unsafe { (*arr.add(i)).resp = libc::strdup(c.as_ptr()) };
    }
    // SAFETY: resp is PAM's out-pointer.
    unsafe { *resp = arr };
    ffi::PAM_SUCCESS
}

unsafe fn free_responses(arr: *mut PamResponse, n: usize) {
    for i in 0..n {
        // SAFETY: caller passes the calloc'd array of `n` entries.
        unsafe {
            let r = (*arr.add(i)).resp;
            if !r.is_null() {
                libc::free(r.cast());
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::free(arr.cast()) };
}
