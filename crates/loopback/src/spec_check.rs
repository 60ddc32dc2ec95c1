//! What the loopback controller checks before presenting a [`FunctionSpec`]: that it only
//! asks for what the advertised [`EpcFeatures`] allow (else [`EpcError::Unsupported`]),
//! and that it is well formed (else [`EpcError::Invalid`]) — BAR layouts, 64-bit BAR
//! pairs, MSI-X table/PBA placement, capability ranges.

use epf_epc::{
    AreaKind, BarSpec, EpcError, EpcFeatures, FunctionSpec, MsixSpec, BAR_COUNT, PCI_CAP_ID_MSIX,
    PCI_CAP_ID_VNDR,
};

use crate::msix::MSIX_ENTRY_SIZE;

/// Checks `spec` against `features`.
pub(crate) fn check_spec(features: &EpcFeatures, spec: &FunctionSpec) -> Result<(), EpcError> {
    for cap in &spec.capabilities {
        if cap.id == PCI_CAP_ID_VNDR && !features.vendor_capabilities {
            return Err(EpcError::Unsupported("vendor-specific capabilities"));
        }
        if cap.id == PCI_CAP_ID_MSIX {
            return Err(EpcError::Invalid(
                "the MSI-X capability is added by the controller from FunctionSpec::msix".into(),
            ));
        }
        let cap_len = 2 + cap.body.len();
        for r in cap.writable.iter().chain(&cap.trapped) {
            if r.start > r.end || r.end > cap_len {
                return Err(EpcError::Invalid(format!(
                    "capability {:#x}: range {r:?} outside its {cap_len} bytes",
                    cap.id
                )));
            }
        }
        if !cap.trapped.is_empty() && !features.trapped_access {
            return Err(EpcError::Unsupported("trapped configuration-space ranges"));
        }
    }

    for (i, bar) in spec.bars.iter().enumerate() {
        let Some(bar) = bar else { continue };
        bar.validate()?;
        if bar.is_64bit {
            match spec.bars.get(i + 1) {
                None => {
                    return Err(EpcError::Invalid(format!(
                        "64-bit BAR {i} has no upper half"
                    )))
                }
                Some(Some(_)) => {
                    return Err(EpcError::Invalid(format!(
                        "BAR {} is the upper half of 64-bit BAR {i}",
                        i + 1
                    )))
                }
                Some(None) => {}
            }
        }
        for area in &bar.areas {
            match area.kind {
                AreaKind::Trapped if !features.trapped_access => {
                    return Err(EpcError::Unsupported("trapped BAR areas"))
                }
                AreaKind::Doorbell if !features.doorbells => {
                    return Err(EpcError::Unsupported("doorbell BAR areas"))
                }
                AreaKind::Memory if !features.shared_memory => {
                    return Err(EpcError::Unsupported("shared-memory BAR areas"))
                }
                AreaKind::MsixTable | AreaKind::MsixPba if spec.msix.is_none() => {
                    return Err(EpcError::Invalid(format!(
                        "BAR {i} has an MSI-X area but the function has no MSI-X"
                    )))
                }
                _ => {}
            }
        }
    }

    if let Some(m) = &spec.msix {
        check_msix(features, spec, m)?;
    }

    match spec.header.interrupt_pin {
        0 => {}
        1..=4 if features.irq.intx => {}
        1..=4 => return Err(EpcError::Unsupported("INTx")),
        p => return Err(EpcError::Invalid(format!("interrupt pin {p}"))),
    }
    Ok(())
}

fn check_msix(features: &EpcFeatures, spec: &FunctionSpec, m: &MsixSpec) -> Result<(), EpcError> {
    if features.irq.msix_vectors == 0 {
        return Err(EpcError::Unsupported("MSI-X"));
    }
    if m.vectors == 0 || m.vectors > 2048 {
        return Err(EpcError::Invalid(format!("{} MSI-X vectors", m.vectors)));
    }
    if m.vectors > features.irq.msix_vectors {
        return Err(EpcError::Unsupported("that many MSI-X vectors"));
    }
    let n = u64::from(m.vectors);
    check_msix_area(
        spec,
        m.table_bar,
        m.table_offset,
        n * MSIX_ENTRY_SIZE,
        AreaKind::MsixTable,
    )?;
    check_msix_area(
        spec,
        m.pba_bar,
        m.pba_offset,
        n.div_ceil(64) * 8,
        AreaKind::MsixPba,
    )
}

fn check_msix_area(
    spec: &FunctionSpec,
    bar: u8,
    offset: u64,
    len: u64,
    kind: AreaKind,
) -> Result<(), EpcError> {
    let what = if kind == AreaKind::MsixTable {
        "MSI-X table"
    } else {
        "MSI-X PBA"
    };
    if offset % 8 != 0 || offset > u64::from(u32::MAX) {
        return Err(EpcError::Invalid(format!(
            "{what} offset {offset:#x} must be 8-byte aligned and fit in 32 bits"
        )));
    }
    let spec_bar: Option<&BarSpec> = spec
        .bars
        .get(bar as usize)
        .and_then(|b| b.as_ref())
        .filter(|_| (bar as usize) < BAR_COUNT);
    let Some(b) = spec_bar else {
        return Err(EpcError::Invalid(format!(
            "{what} is in BAR {bar}, which does not exist"
        )));
    };
    let covered = b.area_at(offset).is_some_and(|a| {
        a.kind == kind
            && offset
                .checked_add(len)
                .is_some_and(|e| e <= a.offset + a.size)
    });
    if !covered {
        return Err(EpcError::Invalid(format!(
            "{what} at BAR {bar} {offset:#x}+{len:#x} is not inside a {kind:?} area"
        )));
    }
    Ok(())
}
