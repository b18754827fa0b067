// pgJDBC cancels through a group of pgmux processes sharing one port (so_reuseport): each round
// opens a new connection, runs pg_sleep(30) and cancels it with Statement.cancel() from another
// thread, then with setQueryTimeout(1). pgJDBC sends the CancelRequest on a new connection to the
// same port, which the kernel may hand to any process of the group.
// Usage: java -cp postgresql.jar CancelTest.java host port db user password rounds
import java.sql.*;
import java.util.*;

public class CancelTest {
    static void expectCancel(Statement st, long startNanos, double maxSeconds, String what) throws Exception {
        try {
            st.execute("select pg_sleep(30)");
            throw new RuntimeException(what + ": the sleep was not cancelled");
        } catch (SQLException e) {
            if (!"57014".equals(e.getSQLState()))
                throw new RuntimeException(what + ": unexpected error " + e.getSQLState() + " " + e.getMessage());
        }
        double took = (System.nanoTime() - startNanos) / 1e9;
        if (took > maxSeconds) throw new RuntimeException(what + ": took " + took + " s");
    }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2];
        Properties p = new Properties();
        p.setProperty("user", a[3]);
        p.setProperty("password", a[4]);
        p.setProperty("sslmode", "disable");
        int rounds = Integer.parseInt(a[5]);
        for (int r = 0; r < rounds; r++) {
            try (Connection conn = DriverManager.getConnection(url, p)) {
                Statement st = conn.createStatement();
                Thread canceller = new Thread(() -> {
                    try {
                        Thread.sleep(500);
                        st.cancel();
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                long t0 = System.nanoTime();
                canceller.start();
                expectCancel(st, t0, 2.5, "round " + r + " Statement.cancel()");
                canceller.join();
                Statement st2 = conn.createStatement();
                st2.setQueryTimeout(1);
                expectCancel(st2, System.nanoTime(), 3.0, "round " + r + " setQueryTimeout(1)");
                try (ResultSet rs = conn.createStatement().executeQuery("select 42")) {
                    rs.next();
                    if (rs.getInt(1) != 42) throw new RuntimeException("connection unusable");
                }
            }
        }
        System.out.println("cancelled " + (2 * rounds) + " statements");
    }
}
