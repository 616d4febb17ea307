//! Links the driver with `-z nodelete`: pcscd may dlclose it after the last
//! reader is closed, and a client thread that outlived its bound on close
//! (or a thread-local destructor) must not run code that was unmapped.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
