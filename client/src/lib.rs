//! remsim-client's library: the main state machine, the driver that runs it
//! with its server and bankd links, and the frontends (shell, vpcd,
//! SIMtrace2), shared by the `remsim-client` binary and the PC/SC reader
//! driver (`ifd/`). `main.rs` reads the flags and wires these together.

pub mod driver;
pub mod frontend;
pub mod main_fsm;
pub mod script;
pub mod shell;
pub mod st2;
pub mod vpcd;
pub mod vpcd_core;
