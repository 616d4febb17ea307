//! The real USB transport (rusb): finds a SIMtrace2-family card emulator by
//! the C client's selectors (-V -P -C -I -S -A -H), matching the cardem
//! interface by class 0xFF / subclass 0x02 and its endpoints by type and
//! direction (spec simtrace2-cardem.md §1). Only the explicit libusb context
//! is used: without USB it is an error, not a panic.

use std::io;
use std::time::Duration;

use anyhow::{Context, bail};
use rusb::{Direction, TransferType, UsbContext};

use super::transport::Transport;

/// Runtime vendor/product ids of the cardem boards.
pub const CARDEM_IDS: [(u16, u16); 5] = [
    (0x1d50, 0x4001),
    (0x1d50, 0x4004),
    (0x1d50, 0x60e3),
    (0x1d50, 0x616d),
    (0x1d50, 0x616e),
];
const CARDEM_CLASS: u8 = 0xFF;
const CARDEM_SUBCLASS: u8 = 0x02;

#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub vendor: Option<u16>,
    pub product: Option<u16>,
    pub config: Option<u8>,
    pub interface: Option<u8>,
    pub altsetting: u8,
    pub address: Option<u8>,
    /// "<bus>-<port>[.<port>…]", as in sysfs.
    pub path: Option<String>,
}

pub struct UsbTransport {
    handle: rusb::DeviceHandle<rusb::Context>,
    ep_out: u8,
    ep_in: u8,
    ep_irq: u8,
    pub path: String,
    pub interface: u8,
}

fn path_of<T: UsbContext>(d: &rusb::Device<T>) -> String {
    let ports: Vec<String> = d
        .port_numbers()
        .unwrap_or_default()
        .iter()
        .map(u8::to_string)
        .collect();
    format!("{}-{}", d.bus_number(), ports.join("."))
}

impl UsbTransport {
    pub fn open(sel: &Selector) -> anyhow::Result<Self> {
        let context = rusb::Context::new().context("no USB available (libusb could not start)")?;
        let devices = context.devices().context("listing USB devices")?;
        let mut chosen = Vec::new();
        for d in devices.iter() {
            let Ok(desc) = d.device_descriptor() else {
                continue;
            };
            let ids = (desc.vendor_id(), desc.product_id());
            let wanted = match (sel.vendor, sel.product) {
                (Some(v), Some(p)) => ids == (v, p),
                (Some(v), None) => ids.0 == v,
                (None, Some(p)) => ids.1 == p,
                (None, None) => CARDEM_IDS.contains(&ids),
            };
            let place = sel.address.is_none_or(|a| d.address() == a)
                && sel.path.as_ref().is_none_or(|p| *p == path_of(&d));
            if wanted && place {
                chosen.push(d);
            }
        }
        let device = match chosen.len() {
            0 => bail!("no SIMtrace2 card emulator found (select with -V/-P and -A or -H)"),
            1 => chosen.remove(0),
            n => bail!("{n} card emulators match: select one with -A or -H"),
        };
        let path = path_of(&device);
        let handle = device
            .open()
            .with_context(|| format!("opening USB device {path}"))?;
        let _ = handle.set_auto_detach_kernel_driver(true);
        let config_value = sel.config.unwrap_or(1);
        if handle.active_configuration().ok() != Some(config_value) {
            handle
                .set_active_configuration(config_value)
                .context("setting the USB configuration")?;
        }
        let config = device
            .active_config_descriptor()
            .context("reading the configuration")?;
        let mut found = None;
        for interface in config.interfaces() {
            for alt in interface.descriptors() {
                let number_ok = sel.interface.is_none_or(|i| alt.interface_number() == i);
                if number_ok
                    && alt.setting_number() == sel.altsetting
                    && alt.class_code() == CARDEM_CLASS
                    && alt.sub_class_code() == CARDEM_SUBCLASS
                    && found.is_none()
                {
                    let (mut out, mut inp, mut irq) = (None, None, None);
                    for ep in alt.endpoint_descriptors() {
                        match (ep.transfer_type(), ep.direction()) {
                            (TransferType::Bulk, Direction::Out) => out = Some(ep.address()),
                            (TransferType::Bulk, Direction::In) => inp = Some(ep.address()),
                            (TransferType::Interrupt, Direction::In) => irq = Some(ep.address()),
                            _ => {}
                        }
                    }
                    found = Some((alt.interface_number(), out, inp, irq));
                }
            }
        }
        let Some((number, Some(ep_out), Some(ep_in), Some(ep_irq))) = found else {
            bail!("{path}: no card-emulation interface with IN, OUT and IRQ IN endpoints");
        };
        handle
            .claim_interface(number)
            .with_context(|| format!("claiming interface {number}"))?;
        handle
            .set_alternate_setting(number, sel.altsetting)
            .context("setting the alternate setting")?;
        Ok(UsbTransport {
            handle,
            ep_out,
            ep_in,
            ep_irq,
            path,
            interface: number,
        })
    }
}

fn usb_error(e: rusb::Error) -> io::Error {
    io::Error::other(e)
}

impl Transport for UsbTransport {
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.handle
            .write_bulk(self.ep_out, msg, Duration::from_secs(100))
            .map(drop)
            .map_err(usb_error)
    }

    fn read_bulk(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        // Zero: no timeout (a timed-out read would lose data).
        let n = self
            .handle
            .read_bulk(self.ep_in, &mut buf, Duration::ZERO)
            .map_err(usb_error)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn read_irq(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 64];
        let n = self
            .handle
            .read_interrupt(self.ep_irq, &mut buf, Duration::ZERO)
            .map_err(usb_error)?;
        buf.truncate(n);
        Ok(buf)
    }
}
