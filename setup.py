"""msnvi_tf: Multi-Source Neural Variational Inference in TensorFlow/Keras."""
import setuptools

setuptools.setup(
    name="msnvi_tf",
    version="0.1.0",
    description="Multi-source variational autoencoders (Kurle et al., AAAI 2019) "
    "in TensorFlow, Keras 3 and TensorFlow Probability.",
    packages=setuptools.find_packages(include=["msnvi_tf", "msnvi_tf.*", "configs"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-probability[tf]>=0.25,<0.26",
        "keras>=3.10,<4",
        "tensorflow-datasets>=4.9",
        "numpy",
        "absl-py",
        "ml-collections>=1.0",
        "matplotlib",
        "tensorboard",
    ],
)
