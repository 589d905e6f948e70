"""Leave the rig as it was found: what a run changes on every core, put back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from pymmcore_plus import CMMCorePlus

from ..hardware import DetectorPair, Rig

logger = logging.getLogger(__name__)


@dataclass
class RigState:
    """Each core's camera settings, trigger modes and shutter at the start."""

    properties: list[tuple[CMMCorePlus, str, str, str]] = field(default_factory=list)
    exposures: list[tuple[CMMCorePlus, str, float]] = field(default_factory=list)
    shutters: list[tuple[CMMCorePlus, str, bool, bool]] = field(default_factory=list)
    cameras: list[tuple[CMMCorePlus, str]] = field(default_factory=list)

    @classmethod
    def capture(cls, rig: Rig, detectors: DetectorPair) -> RigState:
        state = cls()
        cores = rig.cores if rig.multi_core else [rig.primary]
        spec = rig.spec
        trigger_props = (
            {spec.trigger.follower_property, spec.trigger.leader_property} - {None}
            if spec is not None
            else set()
        )
        labels = {detectors.lowdose, detectors.reference}
        for rc in cores:
            core = rc.core
            state.cameras.append((core, core.getCameraDevice()))
            for label in labels & set(core.getLoadedDevices()):
                state.exposures.append((core, label, core.getExposure(label)))
                for prop in {"Binning", *trigger_props}:
                    if prop and core.hasProperty(label, prop):
                        state.properties.append(
                            (core, label, prop, core.getProperty(label, prop))
                        )
            shutter = core.getShutterDevice()
            if shutter:
                state.shutters.append(
                    (core, shutter, core.getShutterOpen(shutter), core.getAutoShutter())
                )
        return state

    def restore(self, timeout_s: float = 5.0) -> None:
        """Put every captured setting back; a device that refuses is logged.

        Done on a helper thread: a device that hangs (a camera stuck in a snap
        holds its lock) must not hang the end of the run; after ``timeout_s`` the
        rest is left with one warning.
        """
        worker = threading.Thread(
            target=self._restore, name="pairscope-restore-rig", daemon=True
        )
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            self._abandoned = True  # what it meets later (a core closed) is not news
            logger.warning(
                "Could not put the rig's settings back within %.0f s: a device "
                "does not answer (a hung camera?). Check binning, exposure and "
                "trigger mode before the next run.",
                timeout_s,
            )

    _abandoned = False  # the run went on without waiting for this restore

    def _restore(self) -> None:
        for core, label, prop, value in self.properties:
            self._try(partial(core.setProperty, label, prop, value), f"{label}.{prop}")
        for core, label, exposure in self.exposures:
            self._try(partial(core.setExposure, label, exposure), label)
        for core, shutter, was_open, auto in self.shutters:
            self._try(partial(core.setShutterOpen, shutter, was_open), shutter)
            self._try(partial(core.setAutoShutter, auto), "AutoShutter")
        for core, camera in self.cameras:
            try:
                current = core.getCameraDevice()
            except Exception:  # the core was closed meanwhile
                current = None
            if camera and current != camera:
                self._try(partial(core.setCameraDevice, camera), camera)

    def _try(self, action: Callable[[], object], what: str) -> None:
        try:
            action()
        except Exception:  # one device that refuses must not keep the rest changed
            if self._abandoned:  # already said: the settings may not be back
                logger.debug("Could not restore %s after the run", what, exc_info=True)
            else:
                logger.warning(
                    "Could not restore %s after the run", what, exc_info=True
                )
