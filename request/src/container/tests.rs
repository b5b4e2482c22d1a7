//! The request contract: annotations, resources, their precedence and every refusal.

use super::*;

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn request(pairs: &[(&str, &str)]) -> Result<Option<ContainerRequest>, RequestError> {
    ContainerRequest::from_annotations(&annotations(pairs), "main")
}

#[test]
fn no_hami_annotation_means_plain_runc() {
    assert_eq!(
        request(&[("io.kubernetes.cri.container-type", "container")]),
        Ok(None)
    );
    assert_eq!(request(&[("hami.io/bind-phase", "success")]), Ok(None));
}

#[test]
fn full_request_is_parsed() {
    let got = request(&[
        ("hami.io/gpu-memory", "4Gi"),
        ("hami.io/gpu-cores", "30"),
        ("hami.io/gpu-compute-policy", "Burst"),
        ("hami.io/gpu-priority", "high"),
        ("hami.io/gpu-count", "2"),
        ("hami.io/use-gputype", "A100, H100"),
        ("hami.io/nouse-gpuuuid", "GPU-bad"),
        ("hami.io/gpu-scheduler-policy", "spread"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(got.memory, Some(MemoryRequest::Bytes(4 << 30)));
    assert_eq!(got.compute_percent, Some(30));
    assert_eq!(got.policy, ComputePolicy::Burst);
    assert_eq!(got.priority, Priority::High);
    assert_eq!(got.device_count, 2);
    assert_eq!(got.selection.use_types, vec!["A100", "H100"]);
    assert_eq!(got.selection.nouse_uuids, vec!["GPU-bad"]);
    assert_eq!(got.placement, Some(PlacementPolicy::Spread));
    assert_eq!(got.assigned_devices, None);
}

#[test]
fn defaults_are_one_device_hard_normal_node_policy() {
    let got = request(&[("hami.io/gpu-memory", "512")]).unwrap().unwrap();
    assert_eq!(got.memory, Some(MemoryRequest::Bytes(512 << 20)));
    assert_eq!(got.compute_percent, None);
    assert_eq!(got.device_count, 1);
    assert_eq!(got.policy, ComputePolicy::Hard);
    assert_eq!(got.priority, Priority::Normal);
    assert_eq!(got.placement, None);
}

#[test]
fn low_priority_is_normal() {
    let got = request(&[("hami.io/gpu-priority", "low"), ("hami.io/gpu-cores", "20")])
        .unwrap()
        .unwrap();
    assert_eq!(got.priority, Priority::Normal);
}

#[test]
fn container_specific_annotation_overrides_the_pod_wide_one() {
    let pairs = [
        ("hami.io/gpu-memory", "1Gi"),
        ("hami.io/gpu-memory-percentage.main", "25"),
        ("hami.io/gpu-cores", "50"),
        ("hami.io/gpu-cores.sidecar", "10"),
    ];
    let main = ContainerRequest::from_annotations(&annotations(&pairs), "main")
        .unwrap()
        .unwrap();
    assert_eq!(main.memory, Some(MemoryRequest::Percent(25)));
    assert_eq!(main.compute_percent, Some(50));
    let sidecar = ContainerRequest::from_annotations(&annotations(&pairs), "sidecar")
        .unwrap()
        .unwrap();
    assert_eq!(sidecar.memory, Some(MemoryRequest::Bytes(1 << 30)));
    assert_eq!(sidecar.compute_percent, Some(10));
}

#[test]
fn knob_for_another_container_only_leaves_this_one_alone() {
    assert_eq!(request(&[("hami.io/gpu-memory.other", "1Gi")]), Ok(None));
}

#[test]
fn malformed_value_names_the_annotation_and_the_accepted_forms() {
    let err = request(&[("hami.io/gpu-memory", "lots")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("hami.io/gpu-memory"), "{text}");
    assert!(text.contains("\"lots\""), "{text}");
    assert!(text.contains("1.5Gi"), "{text}");

    let text = request(&[("hami.io/gpu-cores.main", "150")])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("hami.io/gpu-cores.main") && text.contains("1 to 100"),
        "{text}"
    );

    let text = request(&[("hami.io/gpu-compute-policy", "soft")])
        .unwrap_err()
        .to_string();
    assert!(text.contains("hard, burst"), "{text}");

    let text = request(&[("hami.io/gpu-count", "0")])
        .unwrap_err()
        .to_string();
    assert!(text.contains("hami.io/gpu-count"), "{text}");

    let text = request(&[("hami.io/use-gpuuuid", "GPU-a,,GPU-b")])
        .unwrap_err()
        .to_string();
    assert!(text.contains("empty item"), "{text}");
}

#[test]
fn misspelt_knob_is_an_error_not_ignored() {
    let err = request(&[("hami.io/gpu-memroy", "1Gi")]).unwrap_err();
    assert_eq!(
        err,
        RequestError::UnknownKey {
            key: "hami.io/gpu-memroy".into()
        }
    );
    assert!(err.to_string().contains("gpu-memory-percentage"));
    let err = request(&[("hami.io/gpu-memory.", "1Gi")]).unwrap_err();
    assert!(matches!(err, RequestError::UnknownKey { .. }));
}

#[test]
fn amount_and_percentage_at_the_same_level_contradict() {
    let err = request(&[
        ("hami.io/gpu-memory", "1Gi"),
        ("hami.io/gpu-memory-percentage", "50"),
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("hami.io/gpu-memory ") && text.contains("gpu-memory-percentage"),
        "{text}"
    );
}

#[test]
fn included_and_excluded_device_contradict() {
    let err = request(&[
        ("hami.io/use-gpuuuid", "GPU-1,GPU-2"),
        ("hami.io/nouse-gpuuuid", "GPU-2"),
    ])
    .unwrap_err();
    assert!(matches!(err, RequestError::Contradiction { .. }), "{err}");
}

#[test]
fn assigned_devices_set_the_count_and_must_agree_with_it() {
    let got = request(&[("hami.io/assigned-devices", "GPU-1,GPU-2")])
        .unwrap()
        .unwrap();
    assert_eq!(got.device_count, 2);
    assert_eq!(
        got.assigned_devices,
        Some(vec!["GPU-1".to_owned(), "GPU-2".to_owned()])
    );
    let err = request(&[
        ("hami.io/assigned-devices", "GPU-1"),
        ("hami.io/gpu-count", "2"),
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 devices assigned but 2 requested"),
        "{err}"
    );
    let err = request(&[("hami.io/assigned-devices", "GPU-1,GPU-1")]).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
}

fn with_limits(
    pairs: &[(&str, &str)],
    limits: &[(&str, &str)],
) -> Result<Option<ContainerRequest>, RequestError> {
    ContainerRequest::read(&annotations(pairs), "main", &annotations(limits))
}

#[test]
fn hami_resources_are_a_request_and_annotations_win_over_them() {
    let got = with_limits(
        &[],
        &[
            ("nvidia.com/gpu", "2"),
            ("nvidia.com/gpumem", "3000"),
            ("nvidia.com/gpucores", "30"),
            ("cpu", "1"),
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(got.memory, Some(MemoryRequest::Bytes(3000 << 20)));
    assert_eq!((got.device_count, got.compute_percent), (2, Some(30)));

    let got = with_limits(
        &[
            ("hami.io/gpu-memory-percentage.main", "25"),
            ("hami.io/gpu-cores", "50"),
        ],
        &[("nvidia.com/gpumem", "3000"), ("nvidia.com/gpucores", "30")],
    )
    .unwrap()
    .unwrap();
    assert_eq!(got.memory, Some(MemoryRequest::Percent(25)));
    assert_eq!(got.compute_percent, Some(50));
}

#[test]
fn a_resource_of_zero_asks_nothing_and_an_amount_wins_over_a_percentage() {
    assert_eq!(with_limits(&[], &[("nvidia.com/gpucores", "0")]), Ok(None));
    assert_eq!(
        with_limits(&[], &[("cpu", "2"), ("memory", "1Gi")]),
        Ok(None)
    );
    let got = with_limits(
        &[],
        &[
            ("nvidia.com/gpumem", "1Gi"),
            ("nvidia.com/gpumem-percentage", "50"),
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(got.memory, Some(MemoryRequest::Bytes(1 << 30)));
    assert!(!got.is_whole());
    let whole = with_limits(&[], &[("nvidia.com/gpu", "1")])
        .unwrap()
        .unwrap();
    assert!(whole.is_whole());
}

#[test]
fn a_bad_resource_is_named_as_a_resource() {
    let text = with_limits(&[], &[("nvidia.com/gpucores", "150")])
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("resource limit nvidia.com/gpucores=\"150\" is invalid")
            && text.contains("1 to 100"),
        "{text}"
    );
    let text = with_limits(&[], &[("nvidia.com/gpu", "17")])
        .unwrap_err()
        .to_string();
    assert!(text.contains("1 to 16"), "{text}");
}

#[test]
fn the_device_matcher_names_the_knob_that_excludes() {
    let selection = DeviceSelection {
        use_types: vec!["h100".into()],
        nouse_types: vec!["pcie".into()],
        use_uuids: vec![],
        nouse_uuids: vec!["GPU-bad".into()],
    };
    assert_eq!(
        selection.accepts_type(&["NVIDIA H100 80GB HBM3", "nvidia"]),
        Ok(())
    );
    assert_eq!(
        selection.accepts_type(&["NVIDIA H100 PCIe"]),
        Err(Excluded(knob::NOUSE_TYPE))
    );
    assert_eq!(
        selection.accepts_type(&["Tesla T4"]),
        Err(Excluded(knob::USE_TYPE))
    );
    assert_eq!(
        selection.accepts_uuid("GPU-bad"),
        Err(Excluded(knob::NOUSE_UUID))
    );
    assert_eq!(selection.accepts_uuid("GPU-good"), Ok(()));
}

#[test]
fn knobs_that_only_shape_a_request_ask_for_no_device() {
    for knob in [
        "hami.io/use-gputype",
        "hami.io/gpu-priority",
        "hami.io/gpu-compute-policy",
        "hami.io/gpu-scheduler-policy",
    ] {
        let value = match knob {
            "hami.io/gpu-priority" => "high",
            "hami.io/gpu-compute-policy" => "burst",
            "hami.io/gpu-scheduler-policy" => "spread",
            _ => "A100",
        };
        assert_eq!(request(&[(knob, value)]), Ok(None), "{knob}");
    }
    assert!(
        request(&[("hami.io/use-gputype", "A100"), ("hami.io/gpu-count", "1")])
            .unwrap()
            .is_some()
    );
}
