//! Property tests: the parsers return errors, never panic, on arbitrary input.

mod common;

use nestbox_model::{Device, EnvVar, VmSpec, parse_duration, parse_memory_mib, parse_vcpus};
use proptest::prelude::*;

proptest! {
    #[test]
    fn test_device_from_str_never_panics(s in any::<String>()) {
        let _ = s.parse::<Device>();
    }

    #[test]
    fn test_device_from_str_never_panics_on_awkward_text(s in common::text(0, 40, |_| true)) {
        let _ = s.parse::<Device>();
        let _ = format!("virtio-fs,tag={s}").parse::<Device>();
    }

    #[test]
    fn test_quantities_never_panic(s in any::<String>()) {
        let _ = parse_memory_mib(&s);
        let _ = parse_vcpus(&s);
        let _ = parse_duration(&s);
        let _ = s.parse::<EnvVar>();
    }

    #[test]
    fn test_quantities_never_panic_on_numbers(s in "-?[0-9]{0,25}(\\.[0-9]*)?[A-Za-z ]{0,4}") {
        let _ = parse_memory_mib(&s);
        let _ = parse_vcpus(&s);
        let _ = parse_duration(&s);
    }

    #[test]
    fn test_from_args_never_panics(args in prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "--cpus", "--memory", "--kernel", "--initrd", "--cmdline", "--firmware",
                "--device", "--cpus=2", "--memory=1G", "--device=rng",
            ]).prop_map(str::to_owned),
            any::<String>(),
        ],
        0..8,
    )) {
        let _ = VmSpec::from_args(&args);
    }
}
