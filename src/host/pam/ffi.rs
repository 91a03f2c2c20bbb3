//! libpam, loaded at run time with dlopen so that building rsshd needs no
//! libpam0g-dev and a machine without PAM still runs it with `UsePAM no`.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_NEW_AUTHTOK_REQD: c_int = 12;
pub const PAM_CONV_ERR: c_int = 19;

pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;

pub const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
pub const PAM_ESTABLISH_CRED: c_int = 0x0002;
pub const PAM_DELETE_CRED: c_int = 0x0004;

pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
pub const PAM_PROMPT_ECHO_ON: c_int = 2;
pub const PAM_ERROR_MSG: c_int = 3;
pub const PAM_TEXT_INFO: c_int = 4;

#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

pub type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int;

#[repr(C)]
pub struct PamConv {
    pub conv: ConvFn,
    pub appdata_ptr: *mut c_void,
}

pub enum PamHandle {}

type StartFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const PamConv,
    *mut *mut PamHandle,
) -> c_int;
type FlagsFn = unsafe extern "C" fn(*mut PamHandle, c_int) -> c_int;
type SetItemFn = unsafe extern "C" fn(*mut PamHandle, c_int, *const c_void) -> c_int;
type EnvListFn = unsafe extern "C" fn(*mut PamHandle) -> *mut *mut c_char;
type StrErrorFn = unsafe extern "C" fn(*mut PamHandle, c_int) -> *const c_char;

/// The entry points rsshd uses, resolved once.
pub struct Lib {
    pub start: StartFn,
    pub end: FlagsFn,
    pub authenticate: FlagsFn,
    pub acct_mgmt: FlagsFn,
    pub set_item: SetItemFn,
    pub setcred: FlagsFn,
    pub open_session: FlagsFn,
    pub close_session: FlagsFn,
    pub getenvlist: EnvListFn,
    pub strerror: StrErrorFn,
}

// SAFETY: plain function pointers into a library that stays loaded for the life
// of the process.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

/// The loaded library, or why it could not be loaded.
pub fn lib() -> Result<&'static Lib, String> {
    LIB.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Lib, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed.
    unsafe {
        let h = libc::dlopen(c"libpam.so.0".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if h.is_null() {
            let e = libc::dlerror();
            let msg = if e.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            };
            return Err(format!("cannot load libpam.so.0: {msg}"));
        }
        macro_rules! sym {
            ($name:literal, $ty:ty) => {{
                let p = libc::dlsym(h, $name.as_ptr());
                if p.is_null() {
                    return Err(format!("libpam.so.0 lacks {}", $name.to_string_lossy()));
                }
                std::mem::transmute::<*mut c_void, $ty>(p)
            }};
        }
        Ok(Lib {
            start: sym!(c"pam_start", StartFn),
            end: sym!(c"pam_end", FlagsFn),
            authenticate: sym!(c"pam_authenticate", FlagsFn),
            acct_mgmt: sym!(c"pam_acct_mgmt", FlagsFn),
            set_item: sym!(c"pam_set_item", SetItemFn),
            setcred: sym!(c"pam_setcred", FlagsFn),
            open_session: sym!(c"pam_open_session", FlagsFn),
            close_session: sym!(c"pam_close_session", FlagsFn),
            getenvlist: sym!(c"pam_getenvlist", EnvListFn),
            strerror: sym!(c"pam_strerror", StrErrorFn),
        })
    }
}
