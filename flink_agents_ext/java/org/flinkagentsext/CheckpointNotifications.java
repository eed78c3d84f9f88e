package org.flinkagentsext;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Forwards checkpoint completion and abort notifications to the Python bridge, in both modes. */
final class CheckpointNotifications {

    private static final Logger LOG = LoggerFactory.getLogger(CheckpointNotifications.class);

    /** How a mode delivers a notification to its bridge. */
    interface Bridge {
        void send(boolean complete, long checkpointId) throws Exception;
    }

    private CheckpointNotifications() {}

    /**
     * Sends the notification if the bridge is open; a completion after it closed is logged (an
     * abort then is not: aborts are best effort).
     */
    static void forward(boolean bridgeOpen, boolean complete, long checkpointId, Bridge bridge)
            throws Exception {
        if (bridgeOpen) {
            bridge.send(complete, checkpointId);
        } else if (complete) {
            LOG.warn("checkpoint {} completed after the Python bridge was closed", checkpointId);
        }
    }
}
