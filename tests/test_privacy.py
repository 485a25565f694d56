"""No visitor's picture and no private image in a public repo: one line before anything is pushed, a flag to allow."""

import pytest
from huggingface_hub import HfApi

from training.errors import UserError


@pytest.fixture(scope="module")
def private_pictures(hub) -> str:
    HfApi().create_repo("demo/private-pics", repo_type="dataset", private=True, exist_ok=True)
    return "demo/private-pics"


def test_images_of_a_private_dataset_need_a_private_target_or_the_flag(private_pictures, tmp_path):
    from training.publishing.visibility import check_images_may_go

    with pytest.raises(UserError) as refused:
        check_images_may_go(private_pictures, "demo/leaky-model", "model", False, "the card's suspects")
    line = str(refused.value)
    assert "\n" not in line and private_pictures in line and "demo/leaky-model" in line
    assert "--allow_private_images" in line and "--private" in line
    check_images_may_go(private_pictures, "demo/leaky-model", "model", True, "x")  # to be made private
    check_images_may_go(private_pictures, "demo/leaky-model", "model", False, "x", allow=True)  # said explicitly
    HfApi().create_repo("demo/public-pics", repo_type="dataset", exist_ok=True)
    check_images_may_go("demo/public-pics", "demo/leaky-model", "model", False, "x")  # public to public
    check_images_may_go(str(tmp_path), "demo/leaky-model", "model", False, "x")  # the user's own folder
    HfApi().create_repo("demo/already-public", exist_ok=True)
    with pytest.raises(UserError, match="public model demo/already-public"):  # an existing repo's own visibility
        check_images_may_go(private_pictures, "demo/already-public", "model", True, "x")
    assert not HfApi().repo_exists("demo/leaky-model")


def test_a_public_space_gets_no_private_examples_and_no_public_or_training_feedback(private_pictures):
    from training.publish_space import SpaceArguments, publish_space

    api = HfApi()
    with pytest.raises(UserError, match="private dataset demo/private-pics into the public space"):
        publish_space(SpaceArguments("demo/leaky-space", "demo/any-model", private_pictures))
    with pytest.raises(UserError, match="is the training dataset"):
        publish_space(SpaceArguments("demo/leaky-space", "demo/any-model", "demo/public-pics",
                                     feedback_dataset="demo/public-pics"))
    api.create_repo("demo/public-feedback", repo_type="dataset", exist_ok=True)
    with pytest.raises(UserError, match="feedback dataset demo/public-feedback is public"):
        publish_space(SpaceArguments("demo/leaky-space", "demo/any-model", "demo/public-pics",
                                     feedback_dataset="demo/public-feedback"))
    assert not api.repo_exists("demo/leaky-space", repo_type="space")  # nothing pushed
    with pytest.raises(UserError) as allowed:  # the flag lets the images through: what stops it now is the model
        publish_space(SpaceArguments("demo/leaky-space", "demo/any-model", private_pictures, allow_private_images=True))
    assert "--allow_private_images" not in str(allowed.value), str(allowed.value)


def test_training_on_a_private_dataset_for_a_public_model_stops_before_training(private_pictures, tmp_path):
    from training.train import TrainArguments, release

    args = TrainArguments(dataset_id=private_pictures, model_id="demo/leaky-trained", push_to_hub=True,
                          output_dir=str(tmp_path))
    with pytest.raises(UserError, match="--allow_private_images"):
        release(args)
    assert not HfApi().repo_exists("demo/leaky-trained") and not any(tmp_path.iterdir())
    with pytest.raises(UserError) as allowed:  # past the check with the flag: the empty dataset stops it
        release(TrainArguments(dataset_id=private_pictures, model_id="demo/leaky-trained", push_to_hub=True,
                               output_dir=str(tmp_path), allow_private_images=True))
    assert "--allow_private_images" not in str(allowed.value) and private_pictures in str(allowed.value)


def test_visitors_corrections_are_never_pictured_only_listed():
    from training.pipeline.head.mislabels import pictured

    suspects = [{"file": "train/alien/3.jpg"}, {"file": "feedback/0"}, {"file": "train/predator/9.jpg"},
                {"file": "feedback/12"}]
    assert pictured(suspects) == [suspects[0], suspects[2]]
