//! `~/.hushlogin`: a user's request for quiet logins (sshd's `check_quietlogin`).

use std::time::Duration;

use super::UserInfo;
use super::as_user::{Creds, as_user};

/// How long a look at the home directory may take (a hung network mount).
const DEADLINE: Duration = Duration::from_secs(5);

/// Whether `~/.hushlogin` exists, looked for with the user's identity (sshd
/// stats it as root; a file the user cannot reach in their own home counts as
/// absent). A look that fails or takes too long counts as absent too: the login
/// messages are then shown.
pub async fn hush_login(user: &UserInfo) -> bool {
    let path = user.home.join(".hushlogin");
    as_user(&Creds::from(user), DEADLINE, move || {
        std::fs::metadata(&path).is_ok()
    })
    .await
    .unwrap_or(false)
}
