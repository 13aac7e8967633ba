//! The eBPF object built by `build.rs`, embedded in the agent binary.

/// The ELF object holding every skiff program and map, 8-byte aligned as aya requires.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff-ebpf.o"));

#[cfg(test)]
mod tests {
    use super::OBJECT;
    use aya_obj::Object;
    use skiff_common::names;

    #[test]
    fn every_named_map_and_program_is_in_the_object() {
        let object = Object::parse(OBJECT).expect("embedded object parses");
        for map in names::MAPS {
            assert!(object.maps.contains_key(*map), "map {map} missing; object has {:?}", object.maps.keys());
        }
        for prog in names::PROGRAMS {
            assert!(
                object.programs.contains_key(*prog),
                "program {prog} missing; object has {:?}",
                object.programs.keys()
            );
        }
    }

    #[test]
    fn object_carries_btf() {
        let object = Object::parse(OBJECT).expect("embedded object parses");
        assert!(object.btf.is_some(), "object built without BTF (-C link-arg=--btf missing?)");
    }
}
