package org.flinkagentsext;

import org.apache.flink.runtime.execution.SuppressRestartsException;
import org.apache.flink.util.FlinkRuntimeException;

/**
 * Failures of the Python function that restarting cannot fix, shared by the operators of both
 * execution modes.
 *
 * <p>Python raises {@code flink_agents_ext.errors.NotRecoverableError}, whose message starts
 * with {@link #MARKER}; it reaches Java as text (a pemja exception in thread mode, the Beam
 * harness's error in process mode). {@link #classify} finds the marker and wraps the failure in
 * Flink's {@link SuppressRestartsException}: the job fails once, with the reason on the client,
 * instead of being restarted by the restart strategy again and again.
 */
final class NotRecoverable {

    /** The same text as {@code NOT_RECOVERABLE_MARKER} in {@code flink_agents_ext/errors.py}. */
    static final String MARKER = "[flink-agents-ext: not recoverable]";

    private static final int MAX_CAUSES = 64;

    private NotRecoverable() {}

    /** {@code failure}, wrapped in a {@link SuppressRestartsException} if Python marked it. */
    static Exception classify(Exception failure) {
        Throwable t = failure;
        for (int depth = 0; t != null && depth < MAX_CAUSES; depth++, t = t.getCause()) {
            if (t instanceof SuppressRestartsException) {
                return failure;
            }
            String message = t.getMessage();
            int at = message == null ? -1 : message.indexOf(MARKER);
            if (at >= 0) {
                int end = message.indexOf('\n', at);
                String reason =
                        message.substring(at + MARKER.length(), end < 0 ? message.length() : end)
                                .trim();
                return new SuppressRestartsException(
                        new FlinkRuntimeException(
                                "flink-agents-ext: "
                                        + reason
                                        + " (not recoverable: the job is not restarted)",
                                failure));
            }
        }
        return failure;
    }
}
