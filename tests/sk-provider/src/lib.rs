//! A software authenticator behind OpenSSH's `SecurityKeyProvider` interface
//! (sk-api.h, API version 10), for tests only: the key handle holds the private
//! key itself, so anyone with the key file can sign. What a real token decides,
//! the environment decides here: `RSSHD_SK_FLAGS` (decimal) replaces the flags
//! byte of every signature (0x01 user present, 0x04 user verified; by default
//! the flags asked for), `RSSHD_SK_COUNTER` the signature counter (default 1).
//!
//! Signatures are made as a FIDO authenticator makes them: over
//! SHA-256(application) || flags || counter (big-endian) || SHA-256(the data
//! ssh passes); Ed25519 signs that, ECDSA P-256 signs its SHA-256.

use std::ffi::{CStr, c_char};

use ed25519_dalek::Signer;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use sha2::{Digest, Sha256};

const API_VERSION: u32 = 0x000a_0000;
const ALG_ECDSA: u32 = 0;
const ALG_ED25519: u32 = 1;
const ERR_GENERAL: i32 = -1;
const ERR_UNSUPPORTED: i32 = -2;

#[repr(C)]
pub struct SkEnrollResponse {
    flags: u8,
    public_key: *mut u8,
    public_key_len: usize,
    key_handle: *mut u8,
    key_handle_len: usize,
    signature: *mut u8,
    signature_len: usize,
    attestation_cert: *mut u8,
    attestation_cert_len: usize,
    authdata: *mut u8,
    authdata_len: usize,
}

#[repr(C)]
pub struct SkSignResponse {
    flags: u8,
    counter: u32,
    sig_r: *mut u8,
    sig_r_len: usize,
    sig_s: *mut u8,
    sig_s_len: usize,
}

/// `bytes` in memory from malloc (OpenSSH frees it with free()); a one-byte
/// block for none, as sk-dummy returns.
fn c_bytes(bytes: &[u8]) -> (*mut u8, usize) {
    // SAFETY: malloc of at least one byte; the copy writes `bytes.len()` bytes
    // into the block just allocated with that size.
    unsafe {
        let p = libc::malloc(bytes.len().max(1)) as *mut u8;
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        }
        (p, bytes.len())
    }
}

fn c_box<T>(value: T) -> *mut T {
    // SAFETY: a block of T's size from malloc, written once before it is used.
    unsafe {
        let p = libc::malloc(std::mem::size_of::<T>()) as *mut T;
        if !p.is_null() {
            p.write(value);
        }
        p
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

#[unsafe(no_mangle)]
pub extern "C" fn sk_api_version() -> u32 {
    API_VERSION
}

/// # Safety
/// As sk-api.h: `enroll_response` points to writable storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sk_enroll(
    alg: u32,
    _challenge: *const u8,
    _challenge_len: usize,
    _application: *const c_char,
    flags: u8,
    _pin: *const c_char,
    _options: *mut *mut libc::c_void,
    enroll_response: *mut *mut SkEnrollResponse,
) -> i32 {
    if enroll_response.is_null() {
        return ERR_GENERAL;
    }
    let mut secret = [0u8; 32];
    if getrandom::fill(&mut secret).is_err() {
        return ERR_GENERAL;
    }
    let public = match alg {
        ALG_ED25519 => ed25519_dalek::SigningKey::from_bytes(&secret)
            .verifying_key()
            .to_bytes()
            .to_vec(),
        ALG_ECDSA => match p256::ecdsa::SigningKey::from_bytes(&secret.into()) {
            Ok(k) => k.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            Err(_) => return ERR_GENERAL,
        },
        _ => return ERR_UNSUPPORTED,
    };
    let mut handle = vec![alg as u8];
    handle.extend_from_slice(&secret);
    let (public_key, public_key_len) = c_bytes(&public);
    let (key_handle, key_handle_len) = c_bytes(&handle);
    let (signature, _) = c_bytes(&[]);
    let response = SkEnrollResponse {
        flags,
        public_key,
        public_key_len,
        key_handle,
        key_handle_len,
        signature,
        signature_len: 0,
        attestation_cert: std::ptr::null_mut(),
        attestation_cert_len: 0,
        authdata: std::ptr::null_mut(),
        authdata_len: 0,
    };
    // SAFETY: checked non-null above; the caller owns what it points to.
    unsafe { *enroll_response = c_box(response) };
    0
}

/// # Safety
/// As sk-api.h: the pointers with their lengths are readable, `application`
/// is a C string, `sign_response` points to writable storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sk_sign(
    alg: u32,
    data: *const u8,
    data_len: usize,
    application: *const c_char,
    key_handle: *const u8,
    key_handle_len: usize,
    flags: u8,
    _pin: *const c_char,
    _options: *mut *mut libc::c_void,
    sign_response: *mut *mut SkSignResponse,
) -> i32 {
    if sign_response.is_null()
        || data.is_null()
        || application.is_null()
        || key_handle.is_null()
        || key_handle_len != 33
    {
        return ERR_GENERAL;
    }
    // SAFETY: non-null, with the lengths the caller gives (sk-api.h).
    let (message, app, handle) = unsafe {
        (
            std::slice::from_raw_parts(data, data_len),
            CStr::from_ptr(application).to_bytes(),
            std::slice::from_raw_parts(key_handle, key_handle_len),
        )
    };
    if u32::from(handle[0]) != alg {
        return ERR_GENERAL;
    }
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&handle[1..]);
    let out_flags = env_number("RSSHD_SK_FLAGS").map_or(flags, |f| f as u8);
    let counter = env_number("RSSHD_SK_COUNTER").map_or(1, |c| c as u32);
    let mut signed = Sha256::digest(app).to_vec();
    signed.push(out_flags);
    signed.extend_from_slice(&counter.to_be_bytes());
    signed.extend_from_slice(&Sha256::digest(message));
    let (r, s) = match alg {
        ALG_ED25519 => {
            let sig = ed25519_dalek::SigningKey::from_bytes(&secret).sign(&signed);
            (sig.to_bytes().to_vec(), Vec::new())
        }
        ALG_ECDSA => {
            let Ok(key) = p256::ecdsa::SigningKey::from_bytes(&secret.into()) else {
                return ERR_GENERAL;
            };
            let digest = Sha256::digest(&signed);
            let sig: p256::ecdsa::Signature = match key.sign_prehash(&digest) {
                Ok(s) => s,
                Err(_) => return ERR_GENERAL,
            };
            let (r, s) = sig.split_bytes();
            (r.to_vec(), s.to_vec())
        }
        _ => return ERR_UNSUPPORTED,
    };
    let (sig_r, sig_r_len) = c_bytes(&r);
    let (sig_s, sig_s_len) = if s.is_empty() {
        (std::ptr::null_mut(), 0)
    } else {
        c_bytes(&s)
    };
    let response = SkSignResponse {
        flags: out_flags,
        counter,
        sig_r,
        sig_r_len,
        sig_s,
        sig_s_len,
    };
    // SAFETY: checked non-null above.
    unsafe { *sign_response = c_box(response) };
    0
}

/// No resident keys here.
///
/// # Safety
/// Nothing is read or written.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sk_load_resident_keys(
    _pin: *const c_char,
    _options: *mut *mut libc::c_void,
    _rks: *mut *mut *mut libc::c_void,
    _nrks: *mut usize,
) -> i32 {
    ERR_UNSUPPORTED
}
