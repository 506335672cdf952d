"""Networks: shapes at odd sizes, padding/cropping, identity start, gradients, the paper's size,
window attention against a direct computation, configs and their errors. CPU, small inputs."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dehaze_ros.dcp import dehaze_dcp
from dehaze_ros.models.dehazer import START_AIRLIGHT, START_TRANSMISSION, T_MIN, recover_scene

from dehaze_ros.models import (
    PRESETS,
    ModelConfig,
    build_dehazer,
    build_depth_net,
    count_macs,
    count_parameters,
    get_model_config,
)
from dehaze_ros.models.blocks import TokenMixer
from dehaze_ros.models.depth_net import LOG_DEPTH_LIMIT


PAPER_DEHAZER_PARAMS = 17.36e6
PAPER_DEPTH_NET_PARAMS = 1.98e6
PAPER_UNET_PARAMS = 13.40e6


@pytest.fixture(scope="module")
def networks():
    """(dehazer, depth_net) per preset, eval mode, fixed seed; built once for the whole file."""
    built = {}
    for name in PRESETS:
        torch.manual_seed(0)
        config = get_model_config(name)
        built[name] = (build_dehazer(config).eval(), build_depth_net(config).eval())
    return built


def with_random_output(dehazer):
    """The dehazer's output projection starts at zero (exact identity); give it weights so that
    the output depends on every feature, for tests about the feature path."""
    torch.manual_seed(1)
    torch.nn.init.normal_(dehazer.output_projection.weight, std=0.1)
    torch.nn.init.normal_(dehazer.output_projection.bias, std=0.1)
    return dehazer


@pytest.mark.parametrize(
    "name, shape",
    [
        ("diacmpn-s", (1, 3, 37, 53)),
        ("diacmpn-t", (2, 3, 37, 53)),
        ("diacmpn-t", (1, 3, 64, 48)),
        ("diacmpn-rt", (2, 3, 37, 53)),
        ("diacmpn-rt", (1, 3, 64, 48)),
        ("diacmpn-rt", (1, 3, 5, 7)),
    ],
)
def test_outputs_have_the_input_size_and_depth_is_metric(networks, name, shape):
    dehazer, depth_net = networks[name]
    hazy = torch.rand(shape)
    with torch.inference_mode():
        dehazed, branch_depth_m = dehazer.forward_with_depth(hazy)
        depth_m = depth_net(hazy)
        # forward() and forward_with_depth() agree (skipped for s: a second pass costs seconds)
        plain = dehazer(hazy) if name != "diacmpn-s" else None
    batch, _, height, width = shape
    assert dehazed.shape == (batch, 3, height, width)
    assert branch_depth_m.shape == depth_m.shape == (batch, 1, height, width)
    assert branch_depth_m.dtype == depth_m.dtype == torch.float32
    for depth in (branch_depth_m, depth_m):
        assert torch.isfinite(depth).all() and (depth >= 0).all()
    if plain is not None:
        torch.testing.assert_close(plain, dehazed, rtol=0, atol=0)


def test_paper_configuration_has_the_papers_parameter_count():
    config = get_model_config("diacmpn-s")
    dehazer, depth_net = build_dehazer(config), build_depth_net(config)
    assert abs(count_parameters(dehazer) / PAPER_DEHAZER_PARAMS - 1) < 0.03
    assert abs(count_parameters(depth_net) / PAPER_DEPTH_NET_PARAMS - 1) < 0.03
    assert abs(count_parameters(dehazer.structure_branch) / PAPER_UNET_PARAMS - 1) < 0.01
    # The depth branch inside D is the same architecture as E.
    assert count_parameters(dehazer.depth_branch) == count_parameters(depth_net)


def test_presets_get_lighter_in_order(networks):
    sizes = [
        count_parameters(networks[name][0]) for name in ("diacmpn-s", "diacmpn-t", "diacmpn-rt")
    ]
    assert sizes[0] > 4 * sizes[1] > 16 * sizes[2]


def with_head(name: str, head: str) -> ModelConfig:
    return dataclasses.replace(get_model_config(name), head=head)


@pytest.mark.parametrize("name", ["diacmpn-t", "diacmpn-rt"])
def test_untrained_residual_dehazer_returns_its_input(name):
    torch.manual_seed(0)
    dehazer = build_dehazer(with_head(name, "residual")).eval()
    hazy = torch.rand(1, 3, 37, 53)
    with torch.inference_mode():
        torch.testing.assert_close(dehazer(hazy), hazy, rtol=0, atol=1e-6)


def hazy_scene(height: int = 60, width: int = 80, seed: int = 0):
    """A textured scene with depth growing upwards, hazed with the ASM: (hazy, clear, t, A)."""
    generator = torch.Generator().manual_seed(seed)
    clear = torch.rand(1, 3, height, width, generator=generator) * 0.6 + 0.05
    depth = torch.linspace(8.0, 1.0, height).view(1, 1, height, 1).expand(1, 1, height, width)
    transmission = torch.exp(-0.25 * depth)
    airlight = torch.tensor([0.85, 0.88, 0.9]).view(1, 3, 1, 1)
    return clear * transmission + airlight * (1 - transmission), clear, transmission, airlight


def test_asm_inverse_recovers_the_clear_image_from_the_true_transmission_and_airlight():
    hazy, clear, transmission, airlight = hazy_scene()
    assert transmission.min() > T_MIN
    torch.testing.assert_close(
        recover_scene(hazy, transmission, airlight), clear, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("name", ["diacmpn-t", "diacmpn-rt"])
def test_untrained_asm_dcp_dehazer_is_the_dark_channel_prior(name):
    """The real-time presets start from the DCP: untrained, they give the numpy baseline's image
    (up to the prior's stated border and tie differences), and their t and A are the DCP's. (With
    the colour of A kept: the presets' grey airlight is tested below.)"""
    torch.manual_seed(0)
    dehazer = build_dehazer(dataclasses.replace(get_model_config(name), airlight_chroma=1.0)).eval()
    hazy, _, _, _ = hazy_scene(75, 101)
    with torch.inference_mode():
        out = dehazer.forward_physics(hazy)
    baseline = dehaze_dcp(hazy[0].permute(1, 2, 0).numpy())
    ours = out.dehazed.clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - baseline.dehazed).mean() < 0.005
    np.testing.assert_allclose(out.airlight.reshape(3).numpy(), baseline.airlight, atol=1e-5)
    np.testing.assert_allclose(
        out.transmission[0, 0].numpy(), np.minimum(baseline.transmission, 0.99), atol=0.02
    )
    assert out.transmission.shape == (1, 1, 75, 101)


@pytest.mark.parametrize("name", ["diacmpn-t", "diacmpn-rt"])
def test_airlight_chroma_blends_the_predicted_airlight_with_its_grey(name):
    # A tinted haze: the DCP's (untrained: the network's) A is tinted too.
    hazy, _, _, _ = hazy_scene(75, 101)
    hazy = hazy * torch.tensor([1.0, 0.9, 0.75]).view(1, 3, 1, 1)
    outputs = {}
    for chroma in (1.0, 0.5, 0.0):
        torch.manual_seed(0)
        dehazer = build_dehazer(
            dataclasses.replace(get_model_config(name), airlight_chroma=chroma)
        ).eval()
        with torch.inference_mode():
            outputs[chroma] = dehazer.forward_physics(hazy)
    tinted = outputs[1.0].airlight.reshape(3)
    assert float(tinted.max() - tinted.min()) > 0.1
    grey = tinted.mean()
    torch.testing.assert_close(outputs[0.0].airlight.reshape(3), grey.expand(3))
    torch.testing.assert_close(outputs[0.5].airlight.reshape(3), (grey + tinted) / 2)
    for out in outputs.values():  # only A differs: t is the same, J follows the scattering model
        torch.testing.assert_close(out.transmission, outputs[1.0].transmission)
        torch.testing.assert_close(out.dehazed, recover_scene(hazy, out.transmission, out.airlight))
    assert get_model_config(name).airlight_chroma == 0.0
    with pytest.raises(ValueError, match="airlight_chroma must lie in"):
        dataclasses.replace(get_model_config(name), airlight_chroma=1.5)


def test_asm_head_without_prior_starts_from_its_stated_guess():
    torch.manual_seed(0)
    dehazer = build_dehazer(with_head("diacmpn-rt", "asm")).eval()
    hazy, _, _, _ = hazy_scene()
    with torch.inference_mode():
        out = dehazer.forward_physics(hazy)
    torch.testing.assert_close(
        out.transmission, torch.full_like(out.transmission, START_TRANSMISSION)
    )
    torch.testing.assert_close(out.dehazed, recover_scene(hazy, out.transmission, out.airlight))
    torch.testing.assert_close(out.airlight, torch.full((1, 3, 1, 1), START_AIRLIGHT))


@pytest.mark.parametrize("name", ["diacmpn-t", "diacmpn-rt"])
def test_inner_padding_is_reflection_bottom_right_and_cropped_back(name):
    """An odd input must give exactly the top-left crop of the output for the input reflected up
    to the network's multiple: catches another pad mode, padding on the wrong side, a wrong crop.
    (The residual head: a DCP prior of the padded image is another prior, by design.)"""
    torch.manual_seed(0)
    config = with_head(name, "residual")
    dehazer, depth_net = (
        with_random_output(build_dehazer(config)).eval(),
        build_depth_net(config).eval(),
    )
    hazy = torch.rand(1, 3, 37, 53)
    multiple = dehazer.size_multiple
    padded = F.pad(hazy, (0, -53 % multiple, 0, -37 % multiple), mode="reflect")
    assert padded.shape[-2:] != hazy.shape[-2:]
    with torch.inference_mode():
        dehazed, branch_depth = dehazer.forward_with_depth(hazy)
        dehazed_padded, branch_depth_padded = dehazer.forward_with_depth(padded)
        depth_padded = depth_net(F.pad(hazy, (0, -53 % 16, 0, -37 % 16), mode="reflect"))
        torch.testing.assert_close(dehazed, dehazed_padded[..., :37, :53])
        torch.testing.assert_close(branch_depth, branch_depth_padded[..., :37, :53])
        torch.testing.assert_close(depth_net(hazy), depth_padded[..., :37, :53])
        assert (dehazed - hazy).abs().mean() > 1e-3  # the features really reach the output


def test_images_in_a_batch_do_not_influence_each_other(networks):
    dehazer = with_random_output(build_dehazer(get_model_config("diacmpn-t"))).eval()
    depth_net = networks["diacmpn-t"][1]
    first, second = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40) * 0.3
    with torch.inference_mode():
        batch_dehazed, batch_depth = dehazer.forward_with_depth(torch.cat([first, second]))
        alone_dehazed, alone_depth = dehazer.forward_with_depth(second)
        torch.testing.assert_close(batch_dehazed[1:], alone_dehazed, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(batch_depth[1:], alone_depth, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(
            depth_net(torch.cat([first, second]))[1:], depth_net(second), rtol=1e-3, atol=1e-3
        )


def test_gradient_reaches_every_parameter_through_the_dehazed_output():
    """Every module of D must shape the dehazed image (no dead branch, public-code defect 2);
    E's every parameter must shape its depth."""
    torch.manual_seed(0)
    config = get_model_config("diacmpn-rt")
    dehazer, depth_net = (
        with_random_output(build_dehazer(config)).train(),
        build_depth_net(config).train(),
    )
    hazy = torch.rand(2, 3, 37, 53)
    dehazed, branch_depth_m = dehazer.forward_with_depth(hazy)
    # The dehazed image only: the depth branch must act through it.
    (dehazed - hazy).square().mean().backward(retain_graph=True)
    torch.log(depth_net(hazy)).square().mean().backward()
    for prefix, module in (("dehazer", dehazer), ("depth_net", depth_net)):
        silent = [
            name
            for name, parameter in module.named_parameters()
            if parameter.grad is None or not parameter.grad.abs().sum() > 0
        ]
        assert not silent, f"{prefix} parameters without gradient: {silent}"
    # Supervising the returned branch depth trains the whole depth branch.
    dehazer.zero_grad()
    branch_depth_m.mean().backward()
    silent = [
        name
        for name, parameter in dehazer.depth_branch.named_parameters()
        if parameter.grad is None or not parameter.grad.abs().sum() > 0
    ]
    assert not silent, f"depth branch parameters without gradient from its depth: {silent}"


def test_depth_starts_near_its_scale_and_cannot_overflow(networks):
    depth_net = networks["diacmpn-rt"][1]
    image = torch.rand(1, 3, 32, 32)
    scale = get_model_config("diacmpn-rt").depth_scale_m
    with torch.inference_mode():
        depth_m = depth_net(image)
        log_depth = depth_net.log_depth(image)
        assert (depth_m > scale / 2).all() and (depth_m < scale * 2).all()
        torch.testing.assert_close(depth_m, scale * torch.exp(log_depth))
        huge = depth_net.metres_from_log_depth(torch.full((1, 1, 2, 2), 1e4, dtype=torch.float16))
        assert huge.dtype == torch.float32 and torch.isfinite(huge).all()
        assert torch.allclose(huge, torch.tensor(scale * math.exp(LOG_DEPTH_LIMIT)))


@pytest.mark.parametrize("shift", [0, 4])
def test_window_attention_matches_a_direct_per_window_computation(shift):
    torch.manual_seed(0)
    channels, heads, size = 12, 3, 8
    mixer = TokenMixer(channels, heads, size, shift, use_attention=True, network_depth=4)
    qkv = torch.randn(2, 3 * channels, 16, 24)
    with torch.no_grad():
        fast = mixer._window_attention(qkv)
        padded = (
            F.pad(qkv, (shift, size - shift, shift, size - shift), mode="reflect") if shift else qkv
        )
        bias = mixer.position_bias(mixer.relative_positions).permute(2, 0, 1)  # heads, N, N
        expected = torch.zeros(2, channels, padded.shape[2], padded.shape[3])
        for top in range(0, padded.shape[2], size):
            for left in range(0, padded.shape[3], size):
                window = padded[:, :, top : top + size, left : left + size].reshape(
                    2, 3, heads, channels // heads, -1
                )
                query, key, value = (
                    window[:, part].transpose(-1, -2) for part in range(3)
                )  # B, heads, N, d
                weights = torch.softmax(
                    query @ key.transpose(-1, -2) / math.sqrt(channels // heads) + bias, -1
                )
                out = (weights @ value).transpose(-1, -2).reshape(2, channels, size, size)
                expected[:, :, top : top + size, left : left + size] = out
        expected = expected[:, :, shift : shift + 16, shift : shift + 24]
    torch.testing.assert_close(fast, expected, rtol=1e-3, atol=1e-3)


def test_count_macs_counts_convolutions_exactly_and_attention():
    conv = torch.nn.Conv2d(3, 8, 3)
    assert count_macs(conv, (1, 3, 10, 10)) == 8 * 3 * 9 * 8 * 8
    mixer = TokenMixer(8, 2, 8, 0, use_attention=False, network_depth=4)
    attention = TokenMixer(8, 2, 8, 0, use_attention=True, network_depth=4)
    # q @ k and weights @ v over 64-token windows: 2 * 64 * 64 * 8 MACs per window.
    windows = 4
    position_bias = 64 * 64 * (2 * 256 + 256 * 2)
    qk_conv = 16 * 8 * 16 * 16
    assert (
        count_macs(attention, (1, 8, 16, 16)) - count_macs(mixer, (1, 8, 16, 16))
        == windows * 2 * 64 * 64 * 8 + position_bias + qk_conv
    )


def test_count_macs_leaves_the_network_as_it_was():
    dehazer = build_dehazer(get_model_config("diacmpn-rt")).train()
    before = {name: value.clone() for name, value in dehazer.state_dict().items()}
    assert count_macs(dehazer, (1, 3, 32, 48)) > 0
    assert dehazer.training
    for name, value in dehazer.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed"  # e.g. batch-norm running stats


def test_every_preset_survives_a_round_trip_through_plain_data():
    for name, config in PRESETS.items():
        as_dict = config.to_dict()
        assert json.loads(json.dumps(as_dict)) == as_dict  # plain Python only
        assert ModelConfig.from_dict(json.loads(json.dumps(as_dict))) == config
        assert get_model_config(name) is config


def test_config_errors_name_the_problem():
    as_dict = get_model_config("diacmpn-rt").to_dict()
    with pytest.raises(ValueError, match="window_sise"):
        ModelConfig.from_dict({**as_dict, "window_sise": 8})
    with pytest.raises(TypeError, match="stage_depths"):
        ModelConfig.from_dict({**as_dict, "stage_depths": "11111"})
    with pytest.raises(TypeError, match=r"stage_channels\[2\]"):
        ModelConfig.from_dict({**as_dict, "stage_channels": [16, 32, 64.0, 32, 16]})
    with pytest.raises(TypeError, match="window_size"):
        ModelConfig.from_dict({**as_dict, "window_size": True})
    with pytest.raises(ValueError, match="mirror"):
        ModelConfig.from_dict({**as_dict, "stage_channels": [16, 32, 64, 24, 16]})
    with pytest.raises(ValueError, match="5 entries"):
        ModelConfig.from_dict({**as_dict, "stage_depths": [1, 1, 1]})
    with pytest.raises(ValueError, match="depth_scale_m"):
        ModelConfig.from_dict({**as_dict, "depth_scale_m": 0})
    assert ModelConfig.from_dict({**as_dict, "depth_scale_m": 5}).depth_scale_m == 5.0


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="diacmpn-rt"):
        get_model_config("diacmpn-xl")


def test_wrong_input_shape_is_named(networks):
    dehazer, depth_net = networks["diacmpn-rt"]
    with pytest.raises(ValueError, match=r"\(1, 4, 16, 16\)"):
        dehazer(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        depth_net(torch.rand(3, 16, 16))


def test_depth_network_can_read_the_transmission_of_a_physics_head():
    config = dataclasses.replace(get_model_config("diacmpn-rt"), depth_inputs="image_transmission")
    torch.manual_seed(0)
    depth_net = build_depth_net(config).eval()
    image = torch.rand(1, 3, 37, 53)
    thin, thick = torch.full((1, 1, 37, 53), 0.9), torch.full((1, 1, 37, 53), 0.2)
    with torch.inference_mode():
        with_thin, with_thick = depth_net(image, thin), depth_net(image, thick)
        # No transmission means a clear image: t = 1.
        torch.testing.assert_close(depth_net(image), depth_net(image, torch.ones(1, 1, 37, 53)))
    assert with_thin.shape == (1, 1, 37, 53)
    assert (with_thin - with_thick).abs().mean() > 1e-4  # the optical depth reaches the output
    plain = build_depth_net(get_model_config("diacmpn-rt")).eval()
    with torch.inference_mode():
        torch.testing.assert_close(
            plain(image, thin), plain(image, thick)
        )  # ignored by the paper's E
    with pytest.raises(ValueError, match="needs a head that predicts a transmission"):
        dataclasses.replace(config, head="residual")


def test_an_image_only_depth_network_widens_to_read_the_transmission_without_changing_its_output():
    image_only = build_depth_net(get_model_config("diacmpn-rt"))
    torch.manual_seed(0)
    with torch.no_grad():  # trained-looking weights: no weight of the widened layers is zero
        for weight in image_only.parameters():
            weight.add_(torch.randn_like(weight) * 0.05)
    widened = build_depth_net(
        dataclasses.replace(get_model_config("diacmpn-rt"), depth_inputs="image_transmission")
    )
    widened.load_image_only_state(image_only.state_dict())
    image, transmission = torch.rand(2, 3, 37, 53), torch.rand(2, 1, 37, 53) * 0.9 + 0.1
    log_depth = widened.log_depth(image, transmission)
    torch.testing.assert_close(log_depth, image_only.log_depth(image), rtol=0, atol=1e-6)
    log_depth.mean().backward()  # and training reaches the weights that read -ln t
    assert widened.downsamples[0].weight.grad[:, 3].abs().sum() > 0
    assert widened.input_block.layers[0].weight.grad[:, 3].abs().sum() > 0
    with pytest.raises(ValueError, match="built with transmission_input"):
        image_only.load_image_only_state(image_only.state_dict())
    with pytest.raises(ValueError, match="not the state of a DepthNet of this layout"):
        widened.load_image_only_state(
            {k: v for k, v in image_only.state_dict().items() if "head" not in k}
        )
