"""The demo microscope: specimen, optics, camera physics and UniMMCore devices."""

from ._demo_rig import configure_demo_rig
from ._optics import Optics
from ._scene import Scene, SensorGeometry
from ._sensor import Sensor
from ._specimen import Rod, Specimen, TwoPointTarget

__all__ = [
    "Optics",
    "Rod",
    "Scene",
    "Sensor",
    "SensorGeometry",
    "Specimen",
    "TwoPointTarget",
    "configure_demo_rig",
]
