//! Property tests: every valid spec the strategies make passes validation and survives
//! spec → args → spec, device → string → device and spec → JSON → spec unchanged.

mod common;

use std::time::Duration;

use nestbox_model::{Device, EnvVar, VmSpec, parse_duration, parse_memory_mib, parse_vcpus};
use proptest::prelude::*;

proptest! {
    #[test]
    fn test_generated_specs_validate(spec in common::vm_spec()) {
        prop_assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn test_spec_args_round_trip(spec in common::vm_spec()) {
        let args = spec.to_args();
        prop_assert_eq!(VmSpec::from_args(&args), Ok(spec));
    }

    #[test]
    fn test_device_string_round_trip(device in common::device()) {
        let s = device.to_string();
        prop_assert_eq!(s.parse::<Device>(), Ok(device), "{}", s);
    }

    #[test]
    fn test_spec_json_round_trip(spec in common::vm_spec()) {
        let json = serde_json::to_string(&spec).unwrap();
        prop_assert_eq!(serde_json::from_str::<VmSpec>(&json).unwrap(), spec);
    }

    /// Whatever parses, however it was written, prints in a form that parses to the same device.
    #[test]
    fn test_device_display_is_canonical(s in device_like()) {
        if let Ok(device) = s.parse::<Device>() {
            let canonical = device.to_string();
            prop_assert_eq!(canonical.parse::<Device>(), Ok(device.clone()));
            prop_assert_eq!(canonical.parse::<Device>().unwrap().to_string(), canonical);
        }
    }

    #[test]
    fn test_env_var_round_trip(key in "[A-Za-z_][A-Za-z0-9_]{0,20}", value in common::text(0, 20, |c| *c != '\0')) {
        let env = EnvVar { key, value };
        prop_assert_eq!(env.to_string().parse::<EnvVar>(), Ok(env));
    }

    #[test]
    fn test_memory_units_agree(mib in 1u32..=u32::MAX) {
        prop_assert_eq!(parse_memory_mib(&mib.to_string()), Ok(mib));
        prop_assert_eq!(parse_memory_mib(&format!("{mib}M")), Ok(mib));
        prop_assert_eq!(parse_memory_mib(&format!("{mib}MiB")), Ok(mib));
        prop_assert_eq!(parse_memory_mib(&format!("{}K", u64::from(mib) * 1024)), Ok(mib));
        if mib % 1024 == 0 {
            prop_assert_eq!(parse_memory_mib(&format!("{}G", mib / 1024)), Ok(mib));
        }
    }

    #[test]
    fn test_vcpus_accepts_range(n in 1u8..=nestbox_model::defaults::MAX_VCPUS) {
        prop_assert_eq!(parse_vcpus(&n.to_string()), Ok(n));
    }

    #[test]
    fn test_duration_units_agree(n in 1u64..1_000_000) {
        prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(n)));
        prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse_duration(&n.to_string()), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse_duration(&format!("{n}m")), Ok(Duration::from_secs(n * 60)));
        prop_assert_eq!(parse_duration(&format!("{n}h")), Ok(Duration::from_secs(n * 3600)));
    }
}

/// Strings shaped like `--device` values, so that most of them reach past the first token.
fn device_like() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(nestbox_model::DEVICE_KINDS.to_vec());
    let key = prop::sample::select(vec![
        "id",
        "path",
        "readonly",
        "tap",
        "mac",
        "cid",
        "socket",
        "deflate-on-oom",
        "free-page-reporting",
        "tag",
        "x",
    ]);
    let value = prop_oneof![
        Just(None),
        common::text(0, 8, |_| true).prop_map(Some),
        prop::sample::select(vec!["true", "off", "3", "\"a,b\"", "\"\\\"\"", "\"x"]).prop_map(|s| Some(s.to_owned())),
    ];
    (kind, prop::collection::vec((key, value), 0..5)).prop_map(|(kind, options)| {
        let mut s = kind.to_owned();
        for (key, value) in options {
            s.push(',');
            s.push_str(key);
            if let Some(value) = value {
                s.push('=');
                s.push_str(&value);
            }
        }
        s
    })
}
