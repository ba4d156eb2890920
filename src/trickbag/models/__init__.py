"""Models by name (``MODELS``): ``small_cnn``, ``tf_tutorial_cnn``, ``resnet`` (A/B/C/D),
``vgg7``, ``row_lstm``, and the plain nets for init studies (``plain_mlp``, ``plain_cnn``)."""

from trickbag.models.cnn import PatchWhiteningConv, SqueezeExcite, conv_bn_act, small_cnn, tf_tutorial_cnn, vgg7
from trickbag.models.lstm import RowLSTM, row_lstm
from trickbag.models.plain import plain_cnn, plain_mlp
from trickbag.models.registry import MODELS, build_model
from trickbag.models.resnet import BasicBlock, Bottleneck, ResNet, resnet

__all__ = ["MODELS", "build_model", "small_cnn", "tf_tutorial_cnn", "vgg7", "conv_bn_act", "PatchWhiteningConv", "SqueezeExcite", "resnet", "ResNet", "BasicBlock",
           "Bottleneck", "row_lstm", "RowLSTM", "plain_cnn", "plain_mlp"]
