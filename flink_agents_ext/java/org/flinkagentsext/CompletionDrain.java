package org.flinkagentsext;

import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.TimerHeapInternalTimer;
import org.apache.flink.streaming.api.operators.Triggerable;

import java.util.ArrayDeque;

/**
 * Hands work that the Python function finished off the task thread back to it, from one
 * non-keyed processing-time callback instead of a timer per key per poll interval (see {@code
 * flink_agents_ext/checkpoint/completions.py}), shared by the operators of both modes.
 *
 * <p>While work is outstanding, a callback runs every {@code intervalMs} in the task's mailbox;
 * the mode's {@link Step} collects the finished keys and {@link #fire}s each: the key becomes
 * current and the operator's {@code onProcessingTime} runs with a timer of that key at the
 * current processing time, so the function's {@code on_timer} applies the result exactly as a
 * timer of that key would. After a restore, every key holding an event-time timer at {@link
 * #RESUME_TIMER} is fired once, so the work the checkpoint had in flight resumes.
 */
final class CompletionDrain {

    /** The event-time timer of a key with outstanding work ({@code RESUME_TIMER} in Python). */
    static final long RESUME_TIMER = Long.MAX_VALUE;

    /** What one callback does besides resuming: fire finished keys; true to keep ticking. */
    interface Step {
        boolean run(long now) throws Exception;
    }

    /** Told around each {@link #fire} (thread mode: the operator keeps the resume timers). */
    interface FireListener {
        void beforeFire();

        void afterFire() throws Exception;
    }

    private final AbstractStreamOperator<?> operator;
    private final long intervalMs;
    private final Step step;
    private final FireListener listener;
    private final ArrayDeque<Object> resumeKeys = new ArrayDeque<>();
    private boolean scheduled;
    private boolean open = true;

    /**
     * @param operator the operator; must be the {@link Triggerable} of its timers
     * @param intervalMs the callback's period; {@code <= 0}: the function hands nothing back
     */
    CompletionDrain(AbstractStreamOperator<?> operator, long intervalMs, Step step) {
        this(operator, intervalMs, step, null);
    }

    /** @param listener told around each fire ({@code null}: nobody) */
    CompletionDrain(
            AbstractStreamOperator<?> operator,
            long intervalMs,
            Step step,
            FireListener listener) {
        this.operator = operator;
        this.intervalMs = intervalMs;
        this.step = step;
        this.listener = listener;
    }

    boolean enabled() {
        return intervalMs > 0;
    }

    /** Remembers the keys holding a {@link #RESUME_TIMER} timer; they fire at the first tick. */
    void resumeFrom(InternalTimerService<?> timers) throws Exception {
        if (!enabled()) {
            return;
        }
        timers.forEachEventTimeTimer(
                (namespace, timestamp) -> {
                    if (timestamp == RESUME_TIMER) {
                        resumeKeys.add(operator.getCurrentKey());
                    }
                });
        if (!resumeKeys.isEmpty()) {
            schedule();
        }
    }

    /** Makes sure a callback is due (no-op when one is, or when disabled or closed). */
    void schedule() {
        if (scheduled || !open || !enabled()) {
            return;
        }
        scheduled = true;
        long due = operator.getProcessingTimeService().getCurrentProcessingTime() + intervalMs;
        operator.getProcessingTimeService().registerTimer(due, this::tick);
    }

    /** Fires {@code key}'s {@code onProcessingTime} with a timer at {@code now}. */
    @SuppressWarnings({"unchecked", "rawtypes"})
    void fire(Object key, long now) throws Exception {
        operator.setCurrentKey(key);
        if (listener != null) {
            listener.beforeFire();
        }
        ((Triggerable) operator)
                .onProcessingTime(new TimerHeapInternalTimer(now, key, VoidNamespace.INSTANCE));
        if (listener != null) {
            listener.afterFire();
        }
    }

    /** Fires the keys to resume after a restore that have not been fired yet. */
    void fireResumed(long now) throws Exception {
        while (!resumeKeys.isEmpty()) {
            fire(resumeKeys.poll(), now);
        }
    }

    /** No callback after this (the bridge closed). */
    void close() {
        open = false;
    }

    private void tick(long now) throws Exception {
        scheduled = false;
        if (!open) {
            return;
        }
        fireResumed(now);
        if (step.run(now)) {
            schedule();
        }
    }
}
