"""Backbones (ResNet-9, VGG-11, CIFAR ResNet-18/34), heads, and unilateral, bilateral and ensemble nets."""

from bilateral.models.checkpoint import count_parameters, load_state_strict
from bilateral.models.cifar_resnet import CifarResNet
from bilateral.models.heads import Head
from bilateral.models.nets import BilateralNet, Ensemble, UnilateralNet
from bilateral.models.registry import BACKBONES, build_backbone
from bilateral.models.resnet9 import ResNet9
from bilateral.models.vgg import VGG11

__all__ = [
    "BACKBONES",
    "VGG11",
    "BilateralNet",
    "CifarResNet",
    "Ensemble",
    "Head",
    "ResNet9",
    "UnilateralNet",
    "build_backbone",
    "count_parameters",
    "load_state_strict",
]
